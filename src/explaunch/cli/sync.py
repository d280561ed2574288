"""``explaunch sync SWEEP_DIR``: the MLflow store made to agree with a sweep's job folders.

    explaunch sync multirun/2026-12-01/10-00-00                       into the store the sweep used
    explaunch sync multirun/2026-12-01/10-00-00 --tracking-uri URI    into another store (a copy)

Each job record without its run gets one (params, metrics, tags, artifacts, from the record); a run left RUNNING by
a job that has ended is closed with the record's status. A second sync adds nothing. See :mod:`explaunch.tracking.sync`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from explaunch.errors import ExplaunchError


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("sync", help="log to MLflow the runs a sweep's job folders hold and the store lacks")
    parser.add_argument("sweep_dir", type=Path, metavar="SWEEP_DIR")
    parser.add_argument(
        "--tracking-uri", metavar="URI", help="default: the sweep's own store (tracking.json), else MLFLOW_TRACKING_URI"
    )
    parser.add_argument("--experiment", metavar="NAME", help="default: the experiment the jobs were configured with")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(handler=run)


def store_of(sweep_dir: Path, given: str | None) -> str:
    from explaunch.tracking.store import SweepTracking, resolve_uri

    tracking = SweepTracking.read(sweep_dir)
    if given is None and tracking is not None:
        return tracking.tracking_uri
    return resolve_uri(given, Path.cwd())


def experiment_of(found: list[Any]) -> str:
    from explaunch.tracking.store import DEFAULT_EXPERIMENT

    for _, record in found:
        name = (record.config.get("tracking") or {}).get("experiment")
        if name:
            return str(name)
    return DEFAULT_EXPERIMENT


def run(args: argparse.Namespace) -> int:
    from explaunch.tracking.store import StoreUnavailable, check_store, display_uri
    from explaunch.tracking.sync import job_records, sync_sweep

    sweep_dir: Path = args.sweep_dir
    found = job_records(sweep_dir) if sweep_dir.is_dir() else []
    if not found:
        raise ExplaunchError(f"{sweep_dir}: no job records (job.json) here; give a sweep folder")
    uri = store_of(sweep_dir, args.tracking_uri)
    experiment = args.experiment or experiment_of(found)
    try:
        state = check_store(uri, experiment)
    except StoreUnavailable as ex:
        raise ExplaunchError(f"MLflow store {display_uri(uri)} cannot be written: {ex}") from None
    if state.deleted:
        raise ExplaunchError(
            f"MLflow experiment '{experiment}' is deleted in {display_uri(uri)}: restore it (mlflow experiments "
            f"restore --experiment-id {state.experiment_id}) or give another --experiment"
        )
    from explaunch.launch.sweeplock import SweepLock

    with SweepLock(sweep_dir):  # not while a sweep runs there (it logs its own runs): one line naming it
        result = sync_sweep(sweep_dir, uri, experiment)
    if args.json:
        print(
            json.dumps(
                {
                    "tracking_uri": display_uri(uri),
                    "experiment": experiment,
                    "sweep_run": result.sweep_run,
                    "logged": [str(p) for p in result.logged],
                    "ended": [str(p) for p in result.ended],
                    "killed": result.killed,
                    "present": result.present,
                    "failed": result.failed,
                },
                indent=2,
            )
        )
    else:
        print(
            f"{sweep_dir} -> {display_uri(uri)} (experiment {experiment}): {len(result.logged)} run(s) logged, "
            f"{len(result.ended)} left running closed, {len(result.killed)} of dead jobs ended, "
            f"{result.present} already there"
        )
        for line in result.failed:
            print(f"not synced: {line}")
    return 1 if result.failed else 0
