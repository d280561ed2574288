"""The sweep's parent: the sweeper, its launch paths, signals, the folder's lock."""
