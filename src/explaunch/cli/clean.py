"""``explaunch clean``: what can go from MLflow stores and ``multirun/`` (a dry run unless ``--force``).

    explaunch clean                                   list what would go, and every experiment with its run counts
    explaunch clean --days-old 90                     runs started more than 90 days ago go too
    explaunch clean --force --backup backups/today    copy what goes, then remove it

Stores: each ``--tracking-uri`` (sqlite:///..., a file store folder such as ./mlruns); sweeps: each ``--multirun
DIR``. When neither is given: ``./mlflow.db`` (or ``MLFLOW_TRACKING_URI``), ``./mlruns`` and ``./multirun``, where
they exist.
What counts as removable: see :mod:`explaunch.tracking.cleanup`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from explaunch.errors import ExplaunchError
from explaunch.table import format_table


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "clean", help="orphaned/deleted MLflow experiments, deleted or old runs, sweeps without a completed job"
    )
    parser.add_argument(
        "--tracking-uri",
        action="append",
        default=[],
        metavar="URI",
        help="a store to clean (repeatable); with neither this nor --multirun: ./mlflow.db, ./mlruns, ./multirun",
    )
    parser.add_argument(
        "--multirun",
        action="append",
        default=[],
        type=Path,
        metavar="DIR",
        help="a folder of sweeps (repeatable)",
    )
    parser.add_argument("--days-old", type=positive_days, metavar="N", help="also runs that started over N days ago")
    parser.add_argument("--backup", type=Path, metavar="DIR", help="copy what goes into DIR (new or empty) first")
    parser.add_argument("--force", action="store_true", help="remove (default: a dry run that only lists)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.set_defaults(handler=run)


def positive_days(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text}: must be a number of days > 0")
    return value


def run(args: argparse.Namespace) -> int:
    from explaunch.tracking import cleanup as cleaning

    cwd = Path.cwd()
    stores, multirun = list(args.tracking_uri), list(args.multirun)
    if not stores and not multirun:  # the defaults only when nothing is named
        stores = cleaning.default_stores(cwd)
        multirun = [cwd / "multirun"] if (cwd / "multirun").is_dir() else []
    if not stores and not multirun:
        raise ExplaunchError(
            "nothing to clean here: no ./mlflow.db, ./mlruns or ./multirun; give --tracking-uri URI or --multirun DIR"
        )
    plan = cleaning.find(stores, multirun, args.days_old)
    backed_up: list[Path] = []
    removed: list[str] = []
    if args.force and plan.candidates:
        if args.backup is not None:
            backed_up = cleaning.backup(plan, args.backup)
        removed = cleaning.remove(plan)
    if args.json:
        data = {**plan.to_dict(), "dry_run": not args.force, "backup": [str(p) for p in backed_up], "removed": removed}
        print(json.dumps(data, indent=2))
        return 0
    print(render(plan, args, backed_up, removed))
    return 0


def render(plan: Any, args: argparse.Namespace, backed_up: list[Path], removed: list[str]) -> str:
    experiments = [
        {
            "store": e.store,
            "id": e.experiment_id,
            "experiment": e.name,
            "stage": e.stage,
            "runs": e.runs,
            "deleted runs": e.deleted_runs,
        }
        for e in plan.experiments
    ]
    lines = []
    if experiments:
        lines += [
            "experiments:",
            format_table(experiments, ("store", "id", "experiment", "stage", "runs", "deleted runs")),
        ]
    candidates = [{"kind": c.kind, "what": c.target, "name": c.name, "why": c.reason} for c in plan.candidates]
    if not candidates:
        lines.append("nothing to remove")
    else:
        verb = "removed" if args.force else "would remove"
        lines += [f"{verb} ({len(candidates)}):", format_table(candidates, ("kind", "what", "name", "why"))]
    lines += [f"kept: {line}" for line in plan.kept]
    if backed_up:
        lines.append(f"backed up {len(backed_up)} items into {args.backup}")
    if candidates and not args.force:
        extra = "" if args.backup else " (--backup DIR copies them first)"
        lines.append(f"dry run: nothing removed; --force removes these{extra}")
    elif removed:
        lines.append(f"done: {len(removed)} removed")
    return "\n".join(lines)
