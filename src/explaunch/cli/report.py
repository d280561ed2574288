"""``explaunch report PATH``: a sweep's jobs as a table (or the sweeps below a folder such as ``multirun/``, or with
``--jobs`` every job of those sweeps), read from the job folders alone; sort, filter, group over seeds, write CSV,
plot, and the trade-off between two metrics. The data work is in explaunch.review.rows, .metric_plot and .tradeoff."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from explaunch.errors import EXIT_FAILED, ConfigError, RecordError
from explaunch.review import metric_plot, tradeoff
from explaunch.review import rows as review
from explaunch.review.sweeps import job_history, list_sweeps
from explaunch.sweepdir.reader import COUNT_NAMES, FAILED_STATUSES
from explaunch.table import cell, format_table

SWEEP_COLUMNS = ("path", "date", "jobs", *COUNT_NAMES, "error")
SINGLE_SWEEP_OPTIONS = ("sort", "where", "group_by", "csv", "plot", "metrics", "tradeoff")
HISTORY_OPTIONS = ("group_by", "plot", "tradeoff")  # what --jobs does not take
HISTORY_COLUMNS = ("sweep", "job", "status", "start_time", "duration_s")


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "report",
        help="table of a sweep's jobs and their metrics (or of the sweeps below a folder)",
        description="A table of a sweep's jobs: swept overrides as columns, status, headline metrics and energy, "
        "and energy_quality (low: a measured window too short to trust). "
        "Given a folder of sweeps (multirun/), lists the sweeps instead.",
    )
    parser.add_argument("sweep_dir", type=Path, help="a multirun/<date>/<time> folder, one run's folder, or multirun/")
    parser.add_argument(
        "--jobs",
        action="store_true",
        help="every job of every sweep below the folder in one table (sweep, job, status, error type and message, "
        "duration, metrics); takes --where, --sort, --metrics, --json, --csv",
    )
    parser.add_argument("--json", action="store_true", help="print the rows as a JSON list")
    parser.add_argument("--sort", metavar="METRIC", help="sort by this metric (or column), largest first")
    parser.add_argument("--asc", action="store_true", help="with --sort: smallest first")
    parser.add_argument(
        "--where",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="keep jobs whose override or tag (or status, energy_quality) has this value; repeat for more keys, or "
        "for either value",
    )
    parser.add_argument(
        "--group-by",
        metavar="PARAM",
        action="append",
        default=[],
        help="one row per value of this swept parameter or tag (repeatable): mean ± std and n over the rest (seeds)",
    )
    parser.add_argument("--metrics", metavar="M1,M2|all", help="metric columns to show (default: headline ones)")
    parser.add_argument("--csv", metavar="FILE", type=Path, help="also write the rows shown to this CSV file")
    parser.add_argument("--plot", metavar="METRIC", help="write a PNG of METRIC against --x (error bars: std)")
    parser.add_argument("--x", metavar="PARAM", help="with --plot: the swept parameter on the x axis")
    parser.add_argument("--hue", metavar="PARAM", help="with --plot: one line per value of this parameter")
    parser.add_argument(
        "--out", metavar="FILE.png", type=Path, help="with --plot or --tradeoff: where to write the PNG"
    )
    parser.add_argument(
        "--tradeoff",
        nargs=2,
        metavar=("METRIC_X", "METRIC_Y"),
        help="one point per configuration (mean ± std over seeds), the Pareto front marked; --out writes the PNG",
    )
    parser.add_argument(
        "--better",
        metavar="x=max,y=min",
        help="with --tradeoff: which is better for a metric whose direction is not known (max: higher is better)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    root: Path = args.sweep_dir
    if not root.is_dir():
        raise RecordError(f"{root}: no such folder")
    if args.jobs:
        return report_history(args)
    if not review.is_sweep_dir(root):
        sweeps = list_sweeps(root)
        if sweeps:
            return report_sweeps(args, sweeps)
    every_row = review.load_rows(root)
    check_plot_options(args, every_row)
    if args.tradeoff:
        return report_tradeoff(args, every_row)
    metrics = chosen_metrics(args.metrics, every_row)
    group_by = [review.check_param("--group-by", p, every_row, extra=("status",)) for p in args.group_by]
    if args.sort:
        check_sort(args.sort, every_row, group_by)
        if args.sort not in metrics and args.sort in review.metric_names(every_row):
            metrics.append(args.sort)
    rows = review.filter_rows(every_row, [review.parse_where(w) for w in args.where])
    params = review.varying_params(rows) or review.param_names(rows)
    tags = [t for t in review.varying_tags(rows) if tag_override(t) not in params]  # not twice
    quality = [review.QUALITY] if review.has_energy_quality(rows) else []

    if group_by:
        table = review.group_rows(rows, group_by, metrics)
        if args.sort:
            key = args.sort if args.sort in group_by or args.sort == "n" else f"{args.sort}_mean"
            table = review.sort_rows(table, key, descending=not args.asc)
        columns = [*group_by, "n", *metrics, *quality]
        csv_columns = [*group_by, "n", *(f"{m}_{s}" for m in metrics for s in ("mean", "std", "n")), *quality]
        shown = [grouped_cells(g, group_by, metrics) for g in table]
    else:
        table = review.sort_rows(rows, args.sort, descending=not args.asc) if args.sort else rows
        metrics = [m for m in metrics if m != "duration_s"]  # a column of its own here
        columns = ["job", "status", *params, *tags, "duration_s", *metrics, *quality, "error"]
        every_param = [*review.param_names(rows), *review.tag_names(rows)]  # JSON and CSV: the constant ones too
        csv_columns = ["job", "job_num", "status", "overrides", *every_param, "duration_s", *metrics, *quality, "error"]
        table = [{c: row[c] for c in csv_columns if c in row} for row in table]
        shown = table

    if args.csv:
        review.write_csv(table, csv_columns, args.csv)
    if args.plot:
        metric_plot.plot_metric(rows, args.plot, args.x, args.out, hue=args.hue)

    if args.json:
        print(json.dumps(table, indent=2))
    else:
        print(format_table(shown, columns) if shown else "no job matches")
        constant = [p for p in review.param_names(rows) if p not in params and rows]
        constant += [t for t in constant_tags(rows) if tag_override(t) not in constant]
        if constant and not group_by:
            print("same in every job: " + " ".join(f"{p}={rows[0].get(p)}" for p in constant))
        note = review.energy_quality_note(rows)
        if note is not None:
            print(note)
        if args.plot:
            print(f"plot: {args.out}")
        if args.csv:
            print(f"csv: {args.csv}")
    failed = any(row["status"] in FAILED_STATUSES for row in rows)
    return EXIT_FAILED if failed else 0


def report_sweeps(args: argparse.Namespace, sweeps: list[dict[str, Any]]) -> int:
    given = [name for name in SINGLE_SWEEP_OPTIONS if getattr(args, name)]
    if given:
        value = getattr(args, given[0])
        also = "" if given[0] in HISTORY_OPTIONS else ", or add --jobs for every job of them"
        raise ConfigError(
            f"--{given[0].replace('_', '-')}",
            " ".join(value) if isinstance(value, list) else value,
            f"applies to one sweep; {args.sweep_dir} holds {len(sweeps)} sweeps (report one of the paths it "
            f"lists{also})",
        )
    if args.json:
        print(json.dumps(sweeps, indent=2))
    else:
        shown = [{**s, "path": s["path"] + (" (running)" if s["live"] else "")} for s in sweeps]
        print(format_table(shown, SWEEP_COLUMNS))
    return 0


def report_history(args: argparse.Namespace) -> int:
    """``--jobs``: every job of every sweep below the folder, newest sweep first."""
    for name in HISTORY_OPTIONS:
        if getattr(args, name):
            value = getattr(args, name)
            raise ConfigError(
                f"--{name.replace('_', '-')}",
                " ".join(value) if isinstance(value, list) else value,
                "applies to one sweep, not to --jobs (a table of the jobs of every sweep)",
            )
    for name in ("x", "hue", "out", "better"):
        if getattr(args, name) is not None:
            raise ConfigError(f"--{name}", getattr(args, name), "does not go with --jobs")
    rows, problems = job_history(args.sweep_dir)
    if not rows and not problems:
        raise RecordError(f"{args.sweep_dir}: no sweep below this folder")
    metrics = chosen_metrics(args.metrics, rows) if rows else []
    metrics = [m for m in metrics if m != "duration_s"]
    if args.sort:
        allowed = [*HISTORY_COLUMNS, "job_num", *review.param_names(rows), *review.tag_names(rows), "error_type"]
        if args.sort not in allowed:
            review.check_metric("--sort", args.sort, rows)
        if args.sort not in (*metrics, *HISTORY_COLUMNS) and args.sort in review.metric_names(rows):
            metrics.append(args.sort)
    shown_rows = review.filter_rows(rows, [review.parse_where(w) for w in args.where])
    if args.sort:
        shown_rows = review.sort_rows(shown_rows, args.sort, descending=not args.asc)
    tags = review.tag_names(shown_rows)
    columns = [*HISTORY_COLUMNS, *tags, *metrics, "error_type", "error_message", "overrides"]
    csv_columns = [*HISTORY_COLUMNS[:2], "job_num", *HISTORY_COLUMNS[2:], *tags, *metrics, "error_type"]
    csv_columns += ["error_message", "overrides"]
    table = [{c: row[c] for c in csv_columns if c in row} for row in shown_rows]
    if args.csv:
        review.write_csv(table, csv_columns, args.csv)
    if args.json:
        print(json.dumps(table, indent=2))
    else:
        print(format_table(table, columns) if table else "no job matches")
        for problem in problems:
            print(f"left out, unreadable: {problem}")
        if args.csv:
            print(f"csv: {args.csv}")
    failed = any(row["status"] in FAILED_STATUSES for row in shown_rows)
    return EXIT_FAILED if failed else 0


def report_tradeoff(args: argparse.Namespace, every_row: list[dict[str, Any]]) -> int:
    """``--tradeoff X Y``: one point per configuration, the Pareto front; the PNG with ``--out``."""
    for name in ("group_by", "sort", "metrics"):
        if getattr(args, name):
            value = getattr(args, name)
            raise ConfigError(
                f"--{name.replace('_', '-')}",
                " ".join(value) if isinstance(value, list) else value,
                "does not go with --tradeoff (which takes --where, --better, --out, --json, --csv)",
            )
    x, y = args.tradeoff
    rows = review.filter_rows(every_row, [review.parse_where(w) for w in args.where])
    result = tradeoff.tradeoff(rows, x, y, tradeoff.parse_better(args.better, x, y))
    points = result["points"]
    params = result["params"]
    if args.csv:
        flat = [{**p["config"], **{k: v for k, v in p.items() if k not in ("config", "label")}} for p in points]
        columns = [*params, "n", "x_mean", "x_std", "y_mean", "y_std", "on_front"]
        review.write_csv(flat, columns, args.csv)
    if args.out:
        tradeoff.plot_tradeoff(result, args.out)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    shown = [
        {
            **p["config"],
            "n": p["n"],
            x: spread(p["x_mean"], p["x_std"]),
            y: spread(p["y_mean"], p["y_std"]),
            "front": "*" if p["on_front"] else "",
        }
        for p in points
    ]
    print(format_table(shown, [*params, "n", x, y, "front"]))
    better = {axis: "higher" if result["better"][axis] == "max" else "lower" for axis in ("x", "y")}
    print(
        f"better: {better['x']} {x}, {better['y']} {y}; * on the Pareto front ({len(result['front'])} of {len(points)})"
    )
    if result["left_out"]:
        left = result["left_out"]
        print(f"left out: {left} job{'' if left == 1 else 's'} (not completed, or without both metrics)")
    if args.out:
        print(f"plot: {args.out}")
    if args.csv:
        print(f"csv: {args.csv}")
    return 0


def spread(mean: float | None, std: float | None) -> str:
    if mean is None:
        return ""
    return cell(mean) if std is None else f"{cell(mean)} ± {cell(std)}"


def chosen_metrics(option: str | None, rows: list[dict[str, Any]]) -> list[str]:
    if option is None:
        return review.default_metrics(rows)
    if option == "all":
        return review.metric_names(rows)
    return [review.check_metric("--metrics", m.strip(), rows) for m in option.split(",") if m.strip()]


def check_sort(column: str, rows: list[dict[str, Any]], group_by: list[str]) -> None:
    allowed = [*group_by, "n"] if group_by else [*review.param_names(rows), *review.tag_names(rows)]
    allowed += [] if group_by else ["duration_s", "job_num", "status"]
    if not group_by and review.has_energy_quality(rows):
        allowed.append(review.QUALITY)
    if column in allowed:
        return
    review.check_metric("--sort", column, rows)


def tag_override(column: str) -> str:
    """The override column that sets a tag column's tag (``stage``: ``tags.stage``, from ``+tags.stage=tested``)."""
    return f"tags.{column.removeprefix(review.TAG_PREFIX)}"


def constant_tags(rows: list[dict[str, Any]]) -> list[str]:
    """Tag columns every row holds with one value (said once below the table, as constant overrides are)."""
    return [t for t in review.tag_names(rows) if rows and all(row.get(t) == rows[0].get(t) for row in rows)]


def check_plot_options(args: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    if args.better is not None and args.tradeoff is None:
        raise ConfigError("--better", args.better, "only goes with --tradeoff METRIC_X METRIC_Y")
    if args.tradeoff is not None:
        if args.plot is not None:
            raise ConfigError("--plot", args.plot, "does not go with --tradeoff (give one of them)")
        if args.out is not None and args.out.suffix.lower() != ".png":
            raise ConfigError("--out", args.out, "must name a .png file")
    if args.plot is None:
        for name in ("x", "hue", *(() if args.tradeoff else ("out",))):
            if getattr(args, name) is not None:
                raise ConfigError(f"--{name}", getattr(args, name), "only goes with --plot METRIC")
        return
    if args.x is None:
        raise ConfigError("--plot", args.plot, "needs --x PARAM (the swept parameter on the x axis)")
    if args.out is None:
        raise ConfigError("--plot", args.plot, "needs --out FILE.png")
    if args.out.suffix.lower() != ".png":
        raise ConfigError("--out", args.out, "must name a .png file")
    review.check_metric("--plot", args.plot, rows)
    review.check_param("--x", args.x, rows)
    if args.hue is not None:
        review.check_param("--hue", args.hue, rows)


def grouped_cells(group: dict[str, Any], group_by: list[str], metrics: list[str]) -> dict[str, Any]:
    """``0.812 ± 0.004`` per metric (the mean alone for one value; ``(n=2)`` where fewer jobs had it)."""
    out = {k: group[k] for k in [*group_by, "n", review.QUALITY] if k in group}
    for metric in metrics:
        mean, std, n = group[f"{metric}_mean"], group[f"{metric}_std"], group[f"{metric}_n"]
        if mean is None:
            continue
        text = spread(mean, std)
        out[metric] = text if n == group["n"] else f"{text} (n={n})"
    return out
