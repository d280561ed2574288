"""The model of a sweep folder: job and sweep records, the ledger."""
