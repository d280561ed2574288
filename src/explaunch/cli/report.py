"""``explaunch report SWEEP_DIR``: one row per job, read from the job folders (no tracking server needed)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from explaunch import records
from explaunch.errors import EXIT_FAILED, ExplaunchError
from explaunch.table import format_table

COLUMNS = ("job", "status", "overrides", "duration_s", *records.HEADLINE_METRICS)


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("report", help="table of a sweep's jobs and their headline metrics")
    parser.add_argument("sweep_dir", type=Path, help="a multirun/<date>/<time> folder (or a single run's folder)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.set_defaults(handler=run)


def rows(sweep_dir: Path) -> list[dict[str, Any]]:
    if not sweep_dir.is_dir():
        raise ExplaunchError(f"{sweep_dir}: no such folder")
    sweep = records.summarize_sweep(sweep_dir)
    if not sweep.jobs:
        raise ExplaunchError(f"{sweep_dir}: no job records (job.json) below this folder")
    return [
        {
            "job": row.job_dir,
            "status": row.status,
            "overrides": " ".join(row.overrides),
            "duration_s": row.duration_s,
            **row.metrics,
            **({"error": row.error} if row.error else {}),
        }
        for row in sweep.jobs
    ]


def run(args: argparse.Namespace) -> int:
    table = rows(args.sweep_dir)
    print(json.dumps(table, indent=2) if args.json else format_table(table, COLUMNS))
    return EXIT_FAILED if any(row["status"] != records.COMPLETED for row in table) else 0
