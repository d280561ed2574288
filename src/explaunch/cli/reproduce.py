"""``explaunch reproduce JOB_DIR``: rerun a job from its record and say REPRODUCED (exit 0) or DIFFERS (exit 1).

    explaunch reproduce multirun/2026-11-23/10-00-00/3               rerun into reproduce/<date>/<time>, compare
    explaunch reproduce JOB_DIR --out DIR --rtol 0.2                 timings within 20% count too
    explaunch reproduce JOB_DIR --against OTHER_JOB_DIR              compare two job folders, rerun nothing
    explaunch reproduce JOB_DIR --archive job3.tar.gz                pack it to rerun on another machine

The rerun: :mod:`explaunch.review.rerun`; what is compared and what decides the verdict:
:mod:`explaunch.review.rerun_comparison`; the archive: :mod:`explaunch.review.job_archive`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from explaunch.errors import EXIT_FAILED, ExplaunchError
from explaunch.sweepdir.records import HEADLINE_METRICS
from explaunch.table import format_table

MARKS = {"same": "", "changed": "~", "differs": "DIFFERS"}
SHOWN_MEASURED = (*HEADLINE_METRICS, "generate_time_s")


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "reproduce", help="rerun a job from its record and compare: REPRODUCED (exit 0) or DIFFERS (exit 1)"
    )
    parser.add_argument("job_dir", type=Path, help="a job folder (holding job.json)")
    parser.add_argument("--out", type=Path, help="the rerun's folder (default: ./reproduce/<date>/<time>)")
    parser.add_argument(
        "--rtol",
        type=non_negative,
        help="relative tolerance for timings, energy and memory (default: they are shown, never decide)",
    )
    parser.add_argument(
        "--ignore", action="append", default=[], metavar="METRIC", help="leave a metric out (glob; repeatable)"
    )
    parser.add_argument(
        "--override", action="append", default=[], metavar="KEY=VALUE", help="replace a recorded override"
    )
    parser.add_argument("--code-dir", type=Path, help="the folder with main.py and conf/ (default: as recorded)")
    parser.add_argument("--track", action="store_true", help="log the rerun to MLflow too (default: not)")
    parser.add_argument("--against", type=Path, metavar="JOB_DIR", help="compare with this job folder; rerun nothing")
    parser.add_argument(
        "--archive", type=Path, metavar="FILE", help="write FILE (.tar.gz) to rerun elsewhere; no rerun"
    )
    parser.add_argument("--all", action="store_true", help="show every row (default: differences and key results)")
    parser.add_argument("--json", action="store_true", help="print the comparison as JSON")
    parser.set_defaults(handler=run)


def non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text}: must be a number >= 0")
    return value


def cell(value: Any, exact: bool) -> str:
    if isinstance(value, float):
        return f"{value:.12g}" if exact else f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    from explaunch.review.rerun_comparison import short

    return short(value)


def shown(row: Any, show_all: bool) -> bool:
    if show_all or row.status == "differs":
        return True
    if row.section == "measured":  # informational: the headline ones
        return row.name in SHOWN_MEASURED
    return row.status != "same" or row.section in ("result", "config") or row.name in ("env_hash", "git commit")


def table(comparison: Any, show_all: bool) -> str:
    rows = [
        {
            "": MARKS[r.status],
            "kind": r.section,
            "what": r.name,
            "original": cell(r.original, r.section == "result"),
            "rerun": cell(r.rerun, r.section == "result"),
            "note": r.note,
        }
        for r in comparison.rows
        if shown(r, show_all)
    ]
    hidden = len(comparison.rows) - len(rows)
    lines = [format_table(rows, ("", "kind", "what", "original", "rerun", "note"))]
    if hidden:
        lines.append(f"({hidden} rows not shown: equal, or measurements beside the headline ones; --all shows them)")
    lines.append(comparison.summary())
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from explaunch.review import job_archive, rerun
    from explaunch.review.rerun_comparison import REPRODUCED, compare
    from explaunch.sweepdir import records

    if not (args.job_dir / records.JOB_FILE).is_file():
        raise ExplaunchError(f"{args.job_dir}: no job.json here; give a job folder (e.g. multirun/<date>/<time>/0)")
    if args.archive is not None:
        members = job_archive.write_archive(args.job_dir, args.archive, args.code_dir)
        print(f"wrote {args.archive} ({len(members)} entries); rerun it with: python <unpacked>/reproduce.py")
        return 0
    if args.against is not None:
        rerun_dir = args.against
    else:
        plan = rerun.plan(args.job_dir, args.out, code_dir=args.code_dir, overrides=args.override, track=args.track)
        print(f"rerunning into {plan.out_dir}:\n  {plan.shell()}", file=sys.stderr, flush=True)
        rerun.run(plan)
        rerun_dir = plan.out_dir
    comparison = compare(args.job_dir, rerun_dir, args.rtol, args.ignore)
    print(json.dumps(comparison.to_dict(), indent=2, default=str) if args.json else table(comparison, args.all))
    return 0 if comparison.verdict == REPRODUCED else EXIT_FAILED
