"""MLflow: the only package that imports it (writer, reader, relay, store clean-up, sync)."""
