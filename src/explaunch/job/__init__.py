"""One job, in the process that runs it: the task, seeding, snapshot and its record."""
