"""``explaunch runs``: the MLflow store from the shell (experiments, runs, best run, compare, search, download).

Subcommands::

    explaunch runs list                                   experiments and their run counts
    explaunch runs show EXP [--limit N]                   an experiment's runs, newest first (alias: runs runs)
    explaunch runs best EXP --metric M [--mode max|min]   the finished run with the best value of M
    explaunch runs compare RUN_A RUN_B [--all]            params, metrics and tags side by side, differences marked
    explaunch runs search [EXP] [--filter "tags.status = 'FAILED'"] [--tag KEY=VALUE ...]
    explaunch runs download RUN --dest DIR [--path P]     a run's artifacts

EXP is an experiment name (or id; ``search`` without one searches every experiment); ``--tag stage=tested`` keeps
the runs of jobs run with ``+tags.stage=tested`` (repeatable: every tag must match). RUN is a run id or a job folder
(its ``job.json`` names the run). The store: ``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else ``./mlflow.db``.
MLflow is imported only when a subcommand runs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from explaunch.errors import ExplaunchError, UsageError
from explaunch.sweepdir.records import HEADLINE_METRICS
from explaunch.table import format_table

DIFF_MARK = "*"
MAX_METRIC_COLUMNS = 4


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("runs", help="query the MLflow store: list, show, best, compare, search, download")
    sub = parser.add_subparsers(dest="runs_command", required=True, metavar="SUBCOMMAND")

    def common(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--tracking-uri", help="the store (default: MLFLOW_TRACKING_URI, else sqlite:///./mlflow.db)")
        p.add_argument("--json", action="store_true", help="print JSON instead of a table")
        return p

    listing = common(sub.add_parser("list", help="experiments and their run counts"))
    listing.set_defaults(handler=run_list)

    show = common(sub.add_parser("show", aliases=["runs"], help="an experiment's runs, newest first"))
    show.add_argument("experiment", help="experiment name (or id)")
    show.add_argument("--limit", type=positive, default=20, help="at most N runs (default 20)")
    show.add_argument("--metric", action="append", default=[], help="a metric column to show (repeatable)")
    show.set_defaults(handler=run_show)

    best = common(sub.add_parser("best", help="the finished run with the best value of a metric"))
    best.add_argument("experiment", help="experiment name (or id)")
    best.add_argument("--metric", required=True, help="the metric to rank by, e.g. throughput_e2e_tokens_per_s")
    best.add_argument("--mode", choices=("max", "min"), default="max", help="highest (max, default) or lowest")
    best.add_argument("--filter", default="", help="an MLflow filter the run must also match")
    best.set_defaults(handler=run_best)

    compare = common(sub.add_parser("compare", help="two runs side by side, differences marked with *"))
    compare.add_argument("run_a", help="run id or job folder")
    compare.add_argument("run_b", help="run id or job folder")
    compare.add_argument("--all", action="store_true", help="also the params that are equal")
    compare.set_defaults(handler=run_compare)

    search = common(sub.add_parser("search", help="runs matching an MLflow filter and/or tags"))
    search.add_argument("experiment", nargs="?", help="experiment name (or id); default: every experiment")
    search.add_argument("--filter", default="", help="e.g. \"tags.status = 'FAILED'\" or \"params.batch = '8'\"")
    search.add_argument(
        "--tag", action="append", default=[], metavar="KEY=VALUE", help="a tag the runs carry, e.g. stage=tested"
    )
    search.add_argument("--limit", type=positive, default=100, help="at most N runs (default 100)")
    search.add_argument("--metric", action="append", default=[], help="a metric column to show (repeatable)")
    search.set_defaults(handler=run_search)

    download = common(sub.add_parser("download", help="a run's artifacts into a folder"))
    download.add_argument("run", help="run id or job folder")
    download.add_argument("--dest", type=Path, required=True, help="the folder to write into")
    download.add_argument("--path", help="only this artifact path (e.g. job.json or artifacts/model)")
    download.set_defaults(handler=run_download)


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: must be an integer >= 1")
    return value


def _uri(args: argparse.Namespace) -> str:
    from explaunch.tracking.reader import store_uri

    return store_uri(args.tracking_uri)


def _print(args: argparse.Namespace, data: Any, table: str) -> None:
    print(json.dumps(data, indent=2) if args.json else table)


def run_list(args: argparse.Namespace) -> int:
    from explaunch.tracking.reader import list_experiments

    experiments = list_experiments(_uri(args))
    rows = [{"experiment": e.name, "id": e.experiment_id, "runs": e.runs} for e in experiments]
    _print(args, [e.to_dict() for e in experiments], format_table(rows, ("experiment", "id", "runs")))
    return 0


def metric_columns(runs: list[Any], wanted: list[str]) -> list[str]:
    """The metrics asked for, else the headline metrics the runs have, else the first few of theirs."""
    if wanted:
        return wanted
    present = {m for run in runs for m in run.metrics}
    headline = [m for m in HEADLINE_METRICS if m in present]
    return headline or sorted(present)[:MAX_METRIC_COLUMNS]


def runs_table(runs: list[Any], metrics: list[str]) -> str:
    columns = ["run_id", "name", "status", "start_time", *metrics]
    rows = [
        {
            "run_id": run.run_id,
            "name": run.run_name,
            "status": run.tags.get("status", run.status),
            "start_time": run.start_time,
            **{m: run.metrics[m] for m in metrics if m in run.metrics},
        }
        for run in runs
    ]
    return format_table(rows, columns) if rows else "no runs"


def run_show(args: argparse.Namespace) -> int:
    from explaunch.tracking.reader import search

    runs = search(_uri(args), args.experiment, limit=args.limit)
    _print(args, [r.to_dict() for r in runs], runs_table(runs, metric_columns(runs, args.metric)))
    return 0


def parse_tags(given: list[str]) -> dict[str, str]:
    """``["stage=tested"]`` -> ``{"stage": "tested"}``; an entry without ``=`` or a key is a :class:`UsageError`."""
    tags: dict[str, str] = {}
    for item in given:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--tag {item}: give KEY=VALUE, e.g. --tag stage=tested")
        tags[key.strip()] = value
    return tags


def run_search(args: argparse.Namespace) -> int:
    from explaunch.tracking.reader import search, tag_filter

    tags = parse_tags(args.tag)
    conditions = [c for c in (args.filter.strip(), tag_filter(tags)) if c]
    runs = search(_uri(args), args.experiment, " and ".join(conditions), limit=args.limit)
    _print(args, [r.to_dict() for r in runs], runs_table(runs, metric_columns(runs, args.metric)))
    return 0


def run_best(args: argparse.Namespace) -> int:
    from explaunch.tracking.reader import best_run

    run = best_run(_uri(args), args.experiment, args.metric, args.mode, args.filter)
    lines = [
        f"best run by {args.metric} ({args.mode}): {run.run_id} ({run.run_name})",
        f"{args.metric} = {run.metrics[args.metric]}",
        f"artifacts: {run.artifact_uri}",
    ]
    if "job_dir" in run.tags:
        lines.append(f"job folder: {run.tags['job_dir']}")
    _print(args, run.to_dict(), "\n".join(lines))
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from explaunch.tracking.reader import compare, get_run

    uri = _uri(args)
    a, b = get_run(uri, args.run_a), get_run(uri, args.run_b)
    if a.run_id == b.run_id:
        raise ExplaunchError(f"compare: both arguments name run {a.run_id}")
    values = compare(a, b)
    hidden = [v for v in values if v.section == "param" and not v.differs and not args.all]
    shown = [v for v in values if v not in hidden]
    rows = [{"": DIFF_MARK if v.differs else "", "kind": v.section, "key": v.key, "a": v.a, "b": v.b} for v in shown]
    differing = sum(v.differs for v in values)
    text = "\n".join(
        [
            f"a = {a.run_id} ({a.run_name})",
            f"b = {b.run_id} ({b.run_name})",
            format_table(rows, ("", "kind", "key", "a", "b")),
            f"{differing} of {len(values)} values differ ({DIFF_MARK})"
            + (f"; {len(hidden)} equal params not shown (--all shows them)" if hidden else ""),
        ]
    )
    data = {"a": a.run_id, "b": b.run_id, "values": [v.to_dict() for v in values]}
    _print(args, data, text)
    return 0


def run_download(args: argparse.Namespace) -> int:
    from explaunch.tracking.reader import download

    files = download(_uri(args), args.run, args.dest, args.path)
    _print(args, [str(f) for f in files], "\n".join([*(str(f) for f in files), f"{len(files)} files"]))
    return 0
