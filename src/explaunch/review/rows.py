"""A sweep's jobs as flat rows, and what ``explaunch report`` and ``explaunch validate`` do with them: filter, sort,
group (mean ± std over seeds), write CSV (the plot: ``explaunch.review.metric_plot``). No CLI concerns here: every
function takes and returns plain data. The sweep folder is read through ``explaunch.sweepdir.reader``.

A row is one job: ``job`` (its folder, relative to the sweep), ``job_num``, ``status``, ``overrides`` (as one
string), ``start_time``, ``duration_s``, then one column per override key (``model``, ``lam``, ``batching.x``:
the value as typed, a string), then every numeric metric the job recorded, then ``energy_quality`` (``ok`` / ``low``:
the measured window's, where it recorded one) with ``energy_quality_reasons``, then ``error`` (``Type: message``)
with ``error_type`` and ``error_message``, then, for a job with tags (``+tags.stage=tested``), ``tags`` (the dict)
and one column per tag (``stage``; ``tag:<key>`` where the key is another column's name). Rows are read from the
job folders alone (``job.json``; a live sweep's ``plan.json`` for its running and pending jobs), so a sweep whose
MLflow store is gone, or that is still running, can be reviewed. The rows of every sweep below a folder, each with
its ``sweep``: ``explaunch.review.sweeps.job_history``.
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
from explaunch.sweepdir import reader as sweepdir
from explaunch.sweepdir import records

QUALITY, QUALITY_REASONS = "energy_quality", "energy_quality_reasons"
ERROR_COLUMNS = ("error", "error_type", "error_message")
SWEEP_COLUMN = "sweep"  # in a history of many sweeps (sweeps.job_history): the sweep's folder
TAGS = "tags"  # the job's own labels as recorded ({"stage": "tested"}); each is a column of its own too
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
    TAGS,
)
PARAM_PREFIX = "param:"  # an override key that clashes with a fixed column is shown as ``param:<key>``
TAG_PREFIX = "tag:"  # a tag whose key clashes with another column of the sweep is shown as ``tag:<key>``
RECORDING_METRICS = ("cpu_efficiency", "gpu_efficiency")  # recording adds them, as resources_*, job_energy_*
ENERGY_METRICS = ("energy_joules", "job_energy_joules")
OWN_METRICS_SHOWN = 6  # an experiment without headline metrics (fairness, probe, script) shows its first few


# ---- rows -----------------------------------------------------------------------------------------------------
def is_sweep_dir(path: Path) -> bool:
    """A sweep folder (as the sweeper writes it, or any folder with job folders right below it) or one run's folder."""
    return (path / records.JOB_FILE).is_file() or sweepdir.is_sweep(path)


def param_column(key: str) -> str:
    return f"{PARAM_PREFIX}{key}" if key in FIXED_COLUMNS else key


def load_rows(sweep_dir: Path, reader: sweepdir.SweepReader | None = None) -> list[dict[str, Any]]:
    """One flat dict per job of the sweep in ``sweep_dir``, in job order; running and pending jobs included
    (status ``running`` / ``pending``; ``lost`` for a job that left no record in a sweep no longer running).

    Raises ``RecordError`` for a folder that does not exist or holds no job, and, unless given another ``reader``
    (the dashboard's, which keeps what it read and shows a damaged record as a running job), for a damaged
    ``job.json``.
    """
    if not sweep_dir.is_dir():
        raise RecordError(f"{sweep_dir}: no such folder")
    plan = sweepdir.read_plan(sweep_dir)
    live = sweepdir.sweep_live(sweep_dir, plan)
    reader = reader or sweepdir.SweepReader(sweep_dir, strict=True)
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
            parsed = sweepdir.parse_override(override)
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
        if job.tags:
            row[TAGS] = dict(job.tags)
        rows.append(row)
    add_tag_columns(rows)
    return rows


def add_tag_columns(rows: Sequence[dict[str, Any]]) -> None:
    """Each tag of a job as a column named by its key, or ``tag:<key>`` where the key is a column of the sweep
    already (a fixed one, an override, a metric): so that ``--where stage=tested``, ``--sort`` and ``--group-by``
    take tags as they take overrides."""
    taken = {*FIXED_COLUMNS, *(key for row in rows for key in row)}
    for row in rows:
        for key, value in (row.get(TAGS) or {}).items():
            row[f"{TAG_PREFIX}{key}" if key in taken else key] = value


def tag_names(rows: Iterable[dict[str, Any]]) -> list[str]:
    """Tag columns (``add_tag_columns``), in the order they first appear."""
    names: dict[str, None] = {}
    for row in rows:
        for key in row.get(TAGS) or {}:
            names[f"{TAG_PREFIX}{key}" if f"{TAG_PREFIX}{key}" in row else key] = None
    return list(names)


def varying_tags(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Tag columns that take more than one value (a job without the tag counts as one)."""
    return [t for t in tag_names(rows) if len({row.get(t) for row in rows}) > 1]


def param_names(rows: Iterable[dict[str, Any]]) -> list[str]:
    """Override columns, in the order they first appear."""
    names: dict[str, None] = {}
    for row in rows:
        for override in str(row.get("overrides") or "").split():
            parsed = sweepdir.parse_override(override)
            if parsed is not None:
                names[param_column(parsed[0])] = None
    return list(names)


def varying_params(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Override columns that take more than one value (a missing value counts as one)."""
    return [p for p in param_names(rows) if len({row.get(p) for row in rows}) > 1]


def is_seed(param: str) -> bool:
    """``seed``, a group's own (``experiment_type.seed``) or ``repeat`` (``+repeat=range(5)``): what repeats a
    configuration rather than changing it."""
    return param.lstrip("+").rsplit(".", 1)[-1] in ("seed", "repeat")


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
    own = [m for m in names if is_own_metric(m) and m not in headline]
    rest = sorted(m for m in names if not is_own_metric(m))
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
        own = [m for m in available if is_own_metric(m) and m not in (*records.HEADLINE_METRICS, "duration_s")]
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


def as_float(text: str) -> float | None:
    """A finite float from text (an override's value, ``--where lam=0.1``), else None."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def is_own_metric(name: str) -> bool:
    """The experiment's metrics, as opposed to those recording adds to every job (energy, resources)."""
    return not name.startswith(("resources_", "job_energy_")) and name not in RECORDING_METRICS


def as_number(value: Any) -> float | None:
    """A finite float from a metric or an override's text (``"0.1"``), else None."""
    if is_number(value):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        return as_float(value)
    return None


# ---- choosing columns -----------------------------------------------------------------------------------------
def check_metric(option: str, name: str, rows: Sequence[dict[str, Any]]) -> str:
    available = metric_names(rows)
    if name not in available:
        raise ConfigError(option, name, f"no such metric in this sweep; available: {', '.join(available) or 'none'}")
    return name


def check_param(option: str, name: str, rows: Sequence[dict[str, Any]], extra: Sequence[str] = ()) -> str:
    """A swept parameter (an override column) or a tag column of the rows, or one of ``extra``."""
    available = [*param_names(rows), *tag_names(rows), *extra]
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
    a, b = as_number(cell), as_float(wanted)
    return a is not None and b is not None and a == b


def filter_rows(rows: Sequence[dict[str, Any]], where: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    """Rows matching every key; several values of one key match any of them (``status=failed status=timeout``).
    Keys: override columns, tag columns, ``status``, ``job``, ``energy_quality`` (where a job recorded one),
    ``error_type`` (where a job failed) and ``sweep`` (in a history of many sweeps)."""
    wanted: dict[str, list[str]] = {}
    optional = [c for c in (QUALITY, "error_type", SWEEP_COLUMN) if any(row.get(c) is not None for row in rows)]
    available = [*param_names(rows), *tag_names(rows), "status", "job", *optional]
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


# ---- output ---------------------------------------------------------------------------------------------------
def write_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: "" if row.get(c) is None else row.get(c) for c in columns})
    return path
