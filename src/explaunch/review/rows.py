"""A sweep's jobs as flat rows, and what ``explaunch report`` and ``explaunch validate`` do with them: filter, sort,
group (mean ± std over seeds), write CSV, plot. No CLI concerns here: every function takes and returns plain data.

A row is one job: ``job`` (its folder, relative to the sweep), ``job_num``, ``status``, ``overrides`` (as one
string), ``start_time``, ``duration_s``, then one column per override key (``model``, ``lam``, ``batching.x``:
the value as typed, a string), then every numeric metric the job recorded, then ``energy_quality`` (``ok`` / ``low``:
the measured window's, where it recorded one) with ``energy_quality_reasons``, then ``error`` (``Type: message``)
with ``error_type`` and ``error_message``. Rows are read from the job folders alone (``job.json``; a live sweep's
``plan.json`` for its running and pending jobs), so a sweep whose MLflow store is gone, or that is still running,
can be reviewed. ``job_history`` gives the rows of every sweep below a folder, each with its ``sweep``.
"""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from explaunch.errors import ConfigError, RecordError
from explaunch.review.dashboard import state
from explaunch.sweepdir import records

QUALITY, QUALITY_REASONS = "energy_quality", "energy_quality_reasons"
ERROR_COLUMNS = ("error", "error_type", "error_message")
SWEEP_COLUMN = "sweep"  # in a history of many sweeps (job_history): the sweep's folder
FIXED_COLUMNS = (
    SWEEP_COLUMN,
    "job",
    "job_num",
    "status",
    "overrides",
    "start_time",
    "duration_s",
    QUALITY,
    QUALITY_REASONS,
    *ERROR_COLUMNS,
)
PARAM_PREFIX = "param:"  # an override key that clashes with a fixed column is shown as ``param:<key>``
FAILED_STATUSES = state.FAILED_STATUSES
ENERGY_METRICS = ("energy_joules", "job_energy_joules")
OWN_METRICS_SHOWN = 6  # an experiment without headline metrics (fairness, probe, script) shows its first few


class _StrictReader(state.SweepReader):
    """The dashboard's reader, except that a ``job.json`` that exists but cannot be read is an error, not a job
    shown as running: records are written atomically, so such a file is damaged, and a report must say so."""

    def record(self, job_dir: Path) -> records.JobRecord | None:
        path = job_dir / records.JOB_FILE
        return records.read_job_record(path) if path.is_file() else None


# ---- rows -----------------------------------------------------------------------------------------------------
def is_sweep_dir(path: Path) -> bool:
    """A sweep folder (as the sweeper writes it, or any folder with job folders right below it) or one run's folder."""
    return (path / records.JOB_FILE).is_file() or state.is_sweep(path)


def param_column(key: str) -> str:
    return f"{PARAM_PREFIX}{key}" if key in FIXED_COLUMNS else key


def load_rows(sweep_dir: Path, reader: state.SweepReader | None = None) -> list[dict[str, Any]]:
    """One flat dict per job of the sweep in ``sweep_dir``, in job order; running and pending jobs included
    (status ``running`` / ``pending``; ``lost`` for a job that left no record in a sweep no longer running).

    Raises ``RecordError`` for a folder that does not exist or holds no job, and, unless given another ``reader``
    (the dashboard's, which keeps what it read and shows a damaged record as a running job), for a damaged
    ``job.json``.
    """
    if not sweep_dir.is_dir():
        raise RecordError(f"{sweep_dir}: no such folder")
    plan = state.read_plan(sweep_dir)
    live = state.sweep_live(sweep_dir, plan)
    reader = reader or _StrictReader(sweep_dir)
    jobs = reader.jobs(sweep_dir, plan, live)
    if not jobs:
        raise RecordError(f"{sweep_dir}: no job records (job.json) below this folder")
    now = datetime.now().astimezone().timestamp()
    rows = []
    for job in jobs:
        start_time = None
        if job.started is not None:
            start_time = datetime.fromtimestamp(job.started).astimezone().isoformat(timespec="seconds")
        duration = job.duration_s
        if job.status == "running" and job.started is not None:
            duration = max(0.0, now - job.started)
        row: dict[str, Any] = {
            "job": job.job_dir,
            "job_num": job.num,
            "status": records.COMPLETED if job.status == "skipped" else job.status,  # done in an earlier run
            "overrides": " ".join(job.overrides),
            "start_time": start_time,
            "duration_s": duration,
        }
        for override in job.overrides:
            parsed = state.parse_override(override)
            if parsed is not None:
                row[param_column(parsed[0])] = parsed[1]
        for name, value in job.metrics.items():
            row.setdefault(name, value)
        if job.energy_quality is not None:
            row[QUALITY] = job.energy_quality
            row[QUALITY_REASONS] = list(job.energy_quality_reasons)
        if job.error is not None:
            row["error"] = f"{job.error['type']}: {job.error['message']}"
            row["error_type"], row["error_message"] = job.error["type"], job.error["message"]
        rows.append(row)
    return rows


def param_names(rows: Iterable[dict[str, Any]]) -> list[str]:
    """Override columns, in the order they first appear."""
    names: dict[str, None] = {}
    for row in rows:
        for override in str(row.get("overrides") or "").split():
            parsed = state.parse_override(override)
            if parsed is not None:
                names[param_column(parsed[0])] = None
    return list(names)


def varying_params(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Override columns that take more than one value (a missing value counts as one)."""
    return [p for p in param_names(rows) if len({row.get(p) for row in rows}) > 1]


def is_seed(param: str) -> bool:
    """``seed`` or a group's own (``experiment_type.seed``): what repeats a configuration rather than changing it."""
    return param.rsplit(".", 1)[-1] == "seed"


def config_params(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The swept parameters that make a configuration: those taking more than one value, seeds excluded."""
    return [p for p in varying_params(rows) if not is_seed(p)]


def completed(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [row for row in rows if row.get("status") == records.COMPLETED]


def metric_names(rows: Iterable[dict[str, Any]]) -> list[str]:
    """Numeric metric columns: headline ones first, then the experiment's own, then those recording adds, then the
    job's ``duration_s`` (a column of every row, named here so that it can be sorted, grouped and plotted too)."""
    rows = list(rows)
    params = set(param_names(rows))
    names: dict[str, None] = {}
    for row in rows:
        for key, value in row.items():
            if key not in FIXED_COLUMNS and key not in params and is_number(value):
                names[key] = None
    headline = [m for m in records.HEADLINE_METRICS if m in names]
    own = [m for m in names if state.is_own_metric(m) and m not in headline]
    rest = sorted(m for m in names if not state.is_own_metric(m))
    timing = ["duration_s"] if any(is_number(row.get("duration_s")) for row in rows) else []
    return headline + own + rest + timing


def default_metrics(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The metrics a report shows unless told: the headline ones present (speed, latency, memory, energy), or the
    experiment's own first few where it has no speed figures (summaries before per-group breakdowns such as
    ``accuracy_group0``); and the whole job's energy."""
    available = metric_names(rows)
    headline = [m for m in records.HEADLINE_METRICS if m in available]
    shown = headline
    if not [m for m in headline if m not in ENERGY_METRICS]:
        own = [m for m in available if state.is_own_metric(m) and m not in (*records.HEADLINE_METRICS, "duration_s")]
        own.sort(key=lambda m: m[-1].isdigit())  # breakdowns (accuracy_group0, ...) after the summaries
        shown = own[:OWN_METRICS_SHOWN] + headline
    shown += [m for m in ENERGY_METRICS if m in available and m not in shown]
    return shown


def has_energy_quality(rows: Iterable[dict[str, Any]]) -> bool:
    return any(row.get(QUALITY) is not None for row in rows)


def energy_quality_note(rows: Sequence[dict[str, Any]]) -> str | None:
    """One line on the jobs whose energy is low quality (too short a window, too few samples): how many, and the
    first one's first reason; None when none is."""
    low = [row for row in rows if row.get(QUALITY) == "low"]
    if not low:
        return None
    rated = sum(1 for row in rows if row.get(QUALITY) is not None)
    reasons = low[0].get(QUALITY_REASONS) or []
    first = f" (job {low[0]['job']}: {reasons[0]})" if reasons else ""
    return f"energy is low quality in {len(low)} of {rated} jobs{first}"


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def as_number(value: Any) -> float | None:
    """A finite float from a metric or an override's text (``"0.1"``), else None."""
    if is_number(value):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        return state.as_float(value)
    return None


# ---- choosing columns -----------------------------------------------------------------------------------------
def check_metric(option: str, name: str, rows: Sequence[dict[str, Any]]) -> str:
    available = metric_names(rows)
    if name not in available:
        raise ConfigError(option, name, f"no such metric in this sweep; available: {', '.join(available) or 'none'}")
    return name


def check_param(option: str, name: str, rows: Sequence[dict[str, Any]], extra: Sequence[str] = ()) -> str:
    available = [*param_names(rows), *extra]
    if name not in available:
        raise ConfigError(
            option, name, f"no such swept parameter in this sweep; available: {', '.join(available) or 'none'}"
        )
    return name


# ---- filter and sort ------------------------------------------------------------------------------------------
def parse_where(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ConfigError("--where", text, "expected KEY=VALUE, e.g. --where model=llama")
    return key.strip(), value.strip()


def value_matches(cell: Any, wanted: str) -> bool:
    """``lam=0.1`` matches 0.1, ``0.10`` and ``1e-1``; text compares as text."""
    if cell is None:
        return wanted in ("", "null", "None")
    if str(cell) == wanted:
        return True
    a, b = as_number(cell), state.as_float(wanted)
    return a is not None and b is not None and a == b


def filter_rows(rows: Sequence[dict[str, Any]], where: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    """Rows matching every key; several values of one key match any of them (``status=failed status=timeout``).
    Keys: override columns, ``status``, ``job``, ``energy_quality`` (where a job recorded one), ``error_type`` (where
    a job failed) and ``sweep`` (in a history of many sweeps)."""
    wanted: dict[str, list[str]] = {}
    optional = [c for c in (QUALITY, "error_type", SWEEP_COLUMN) if any(row.get(c) is not None for row in rows)]
    available = [*param_names(rows), "status", "job", *optional]
    for key, value in where:
        if key not in available:
            allowed = f"no such swept parameter in this sweep; available: {', '.join(available)}"
            raise ConfigError("--where", f"{key}={value}", allowed)
        wanted.setdefault(key, []).append(value)
    return [
        row for row in rows if all(any(value_matches(row.get(k), v) for v in values) for k, values in wanted.items())
    ]


def sort_rows(rows: Sequence[dict[str, Any]], column: str, descending: bool = True) -> list[dict[str, Any]]:
    """Rows by ``column`` (numbers as numbers); rows without a value last either way."""
    present = [row for row in rows if row.get(column) is not None]
    missing = [row for row in rows if row.get(column) is None]
    numeric = all(as_number(row[column]) is not None for row in present)

    def key(row: dict[str, Any]) -> Any:
        return as_number(row[column]) if numeric else str(row[column])

    return sorted(present, key=key, reverse=descending) + missing


# ---- group ----------------------------------------------------------------------------------------------------
def group_key(value: Any) -> tuple[int, float, str]:
    number = as_number(value)
    return (0, number, "") if number is not None else (1, 0.0, str(value))


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n - 1); std is None for fewer than 2 values."""
    if not values:
        return None, None
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else None)


def group_rows(rows: Sequence[dict[str, Any]], by: list[str], metrics: list[str]) -> list[dict[str, Any]]:
    """One row per combination of ``by`` values, in sorted order: those values, ``n`` (jobs in the group), and for
    each metric ``<m>_mean``, ``<m>_std`` (sample std over the group: seeds, repeats, the other parameters; None
    below 2 values) and ``<m>_n`` (jobs that have the metric: a failed job has none); ``energy_quality``: ``low``
    where a member's is, ``ok`` where every member that recorded one is ok."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row.get(k) for k in by), []).append(row)
    out = []
    for values in sorted(groups, key=lambda vs: tuple(group_key(v) for v in vs)):
        members = groups[values]
        grouped: dict[str, Any] = dict(zip(by, values, strict=True))
        grouped["n"] = len(members)
        qualities = {m.get(QUALITY) for m in members} - {None}
        if qualities:
            grouped[QUALITY] = "low" if "low" in qualities else "ok"
        for metric in metrics:
            numbers = [n for n in (as_number(m.get(metric)) for m in members) if n is not None]
            mean, std = mean_std(numbers)
            grouped[f"{metric}_mean"] = mean
            grouped[f"{metric}_std"] = std
            grouped[f"{metric}_n"] = len(numbers)
        out.append(grouped)
    return out


# ---- sweeps below a folder ------------------------------------------------------------------------------------
COUNT_NAMES = state.COUNT_NAMES


def sweeps_below(root: Path) -> list[tuple[dict[str, Any], list[dict[str, Any]], str | None]]:
    """The sweeps below ``root`` (``multirun/``), newest first, each with its rows (``load_rows``) and, for a sweep
    that cannot be read (a damaged ``job.json``), no rows and the reason."""
    out: list[tuple[dict[str, Any], list[dict[str, Any]], str | None]] = []
    for found in state.find_sweeps(root):
        try:
            out.append((found, load_rows(root / found["path"]), None))
        except RecordError as ex:
            out.append((found, [], str(ex)))
    return out


def list_sweeps(root: Path) -> list[dict[str, Any]]:
    """The sweeps below ``root`` (``multirun/``), newest first: path (relative to root), date, jobs and counts."""
    out = []
    for found, rows, error in sweeps_below(root):
        entry: dict[str, Any] = {"path": found["path"], "date": None, "jobs": 0}
        entry.update(dict.fromkeys(COUNT_NAMES, 0))
        if error is not None:
            entry["error"] = error
        starts = sorted(r["start_time"] for r in rows if r.get("start_time"))
        stamp = datetime.fromtimestamp(found["modified"]).astimezone().isoformat(timespec="seconds")
        entry["date"] = (starts[0] if starts else stamp)[:16].replace("T", " ")
        entry["jobs"] = len(rows)
        for row in rows:
            entry[state.COUNTED_AS.get(row["status"], "failed")] += 1
        entry["live"] = found["live"]
        out.append(entry)
    return out


def job_history(root: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Every job of every sweep below ``root`` as one list of rows (``load_rows``'s, each with ``sweep``: the sweep's
    path relative to ``root``), newest sweep first and its jobs in order; and one line per sweep that could not be
    read (its rows are left out)."""
    rows, problems = [], []
    for found, sweep_rows, error in sweeps_below(root):
        if error is not None:
            problems.append(f"{found['path']}: {error}")
        rows += [{SWEEP_COLUMN: found["path"], **row} for row in sweep_rows]
    return rows, problems


# ---- output ---------------------------------------------------------------------------------------------------
def write_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: "" if row.get(c) is None else row.get(c) for c in columns})
    return path


def plot_metric(
    rows: Sequence[dict[str, Any]], metric: str, x: str, out: Path, hue: str | None = None
) -> dict[str, Any]:
    """A PNG of ``metric`` against the swept parameter ``x``: each point the mean of the jobs sharing that value
    (and ``hue``'s), error bars their sample std (over seeds and the parameters not shown). Returns what was drawn:
    ``{"series": [{"label", "points": [{"x", "mean", "std", "n"}]}]}``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with_metric = [r for r in rows if as_number(r.get(metric)) is not None and r.get(x) is not None]
    if not with_metric:
        raise ConfigError("--plot", metric, f"no job has both {metric} and {x}: nothing to draw")
    by = [hue, x] if hue else [x]
    groups = group_rows(with_metric, by, [metric])
    numeric = all(as_number(g[x]) is not None for g in groups)
    categories = sorted({g[x] for g in groups}, key=group_key)
    series: dict[str, list[dict[str, Any]]] = {}
    for g in groups:
        label = f"{hue}={g[hue]}" if hue else metric
        point = {"x": g[x], "mean": g[f"{metric}_mean"], "std": g[f"{metric}_std"], "n": g[f"{metric}_n"]}
        series.setdefault(label, []).append(point)

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    try:
        for label, points in series.items():
            points.sort(key=lambda p: group_key(p["x"]))
            xs = [float(as_number(p["x"]) or 0.0) if numeric else float(categories.index(p["x"])) for p in points]
            ax.errorbar(
                xs,
                [p["mean"] for p in points],
                yerr=[p["std"] or 0.0 for p in points],
                marker="o",
                capsize=4,
                label=label,
            )
        if not numeric:
            ax.set_xticks(range(len(categories)), [str(c) for c in categories])
        ax.set_xlabel(x)
        ax.set_ylabel(metric)
        counts = sorted({p["n"] for points in series.values() for p in points})
        if counts == [1]:
            ax.set_title(f"{metric} vs {x}: one job per point (no spread to show)", fontsize=10)
        else:
            n_text = str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
            ax.set_title(f"{metric} vs {x}: mean ± std over n={n_text} jobs per point", fontsize=10)
        ax.grid(alpha=0.3)
        if hue:
            ax.legend(title=None)
        fig.tight_layout()
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, format="png")
    finally:
        plt.close(fig)
    return {"metric": metric, "x": x, "hue": hue, "series": [{"label": k, "points": v} for k, v in series.items()]}
