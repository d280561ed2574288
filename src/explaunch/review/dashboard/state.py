"""What the dashboard shows for one sweep: counts, progress and the time left, the jobs' table, the chart of a metric
against a swept parameter, errors, alerts and resource series. The sweep folder is read through
:class:`explaunch.sweepdir.reader.SweepReader` (the same reader as ``explaunch report``); nothing runs inside the jobs
for it.

Every function returns plain data (dicts, lists, numbers, strings) that becomes the page's JSON; record text is
passed through as it is and escaped by the page, which builds its DOM with ``textContent``.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from explaunch.review.rows import as_float, is_own_metric
from explaunch.sweepdir import records
from explaunch.sweepdir.reader import (
    COUNT_NAMES,
    COUNTED_AS,
    FAILED_STATUSES,
    JobView,
    SweepReader,
    parse_override,
    read_json,
    read_plan,
    rel_path,
    sweep_live,
)

TABLE_METRICS = 8  # the headline metrics of an LLM job (records.HEADLINE_METRICS), or an experiment's first few
RECENT_FINISHED = 6  # finished jobs whose resource series are shown beside the running ones
MAX_POINTS = 200  # per series, after downsampling
MACHINE_COLUMNS = ("system_cpu_percent", "system_memory_percent")
JOB_COLUMNS = ("cpu_percent", "rss_mib")  # an older sweep's rss_mb is read as rss_mib
GPU_SUFFIXES = ("_util_percent", "_memory_percent")


# ---- one sweep ------------------------------------------------------------------------------------------------
def sweep_state(
    reader: SweepReader, sweep_dir: Path, metric: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """Everything the page shows for one sweep."""
    now = time.time()
    plan = read_plan(sweep_dir)
    live = sweep_live(sweep_dir, plan)
    jobs = reader.jobs(sweep_dir, plan, live)
    counts = dict.fromkeys(COUNT_NAMES, 0)
    for job in jobs:
        counts[COUNTED_AS.get(job.status, "failed")] += 1
    summary = read_json(sweep_dir / records.SWEEP_FILE) if not live else None
    values = swept_values(jobs)
    params = list(values)
    metric_names = metric_choices(jobs)
    metric = metric if metric in metric_names else (metric_names[0] if metric_names else None)
    param = param if param in params else default_param(values)
    shown_metrics = table_metrics(jobs)
    started = plan.get("started") if plan and isinstance(plan.get("started"), int | float) else None
    return {
        "sweep": rel_path(sweep_dir, reader.root),
        "live": live,
        "now": now,
        "started": started,
        "stop_reason": summary.get("stop_reason") if isinstance(summary, dict) else None,
        "counts": counts,
        "total": len(jobs),
        "progress": progress(jobs, counts, plan, now, live),
        "params": params,
        "metrics": metric_names,
        "table_metrics": shown_metrics,
        "jobs": [job_row(job, now, shown_metrics) for job in jobs],
        "chart": chart(jobs, metric, param),
        "errors": [error_row(job) for job in jobs if job.error is not None and job.status in FAILED_STATUSES],
        "alerts": [
            {"job_dir": job.job_dir, "num": job.num, "message": alert, "live": job.status == "running"}
            for job in jobs
            for alert in job.alerts
        ],
        "resources": resources(reader, sweep_dir, jobs, started),
        "controls": controls_lines(read_json(sweep_dir / records.CONTROLS_FILE)),
    }


def controls_lines(data: Any) -> list[str]:
    """One line per control the sweep has: time held by its limits, spend against each budget, its target."""
    if not isinstance(data, dict):
        return []
    lines = []
    limits = data.get("limits")
    if isinstance(limits, dict):
        set_ = ", ".join(f"{k} {v:g}" for k, v in limits.items() if k not in ("held_s", "holds", "holding", "poll_s"))
        held = f"held {limits.get('held_s', 0):g} s ({limits.get('holds', 0)}x)"
        lines.append(
            f"limits {set_}: {held}" + (f", holding now: {limits['holding']}" if limits.get("holding") else "")
        )
    for name, spend in (data.get("budget") or {}).items():
        if isinstance(spend, dict) and isinstance(spend.get("spent"), int | float):
            lines.append(f"budget {name}: {spend['spent']:.4g} of {spend.get('budget'):g} spent")
    rule = data.get("stop_when")
    if isinstance(rule, dict):
        lines.append(f"stop_when {rule.get('rule')}: " + (rule.get("met") or "not met yet"))
    order = data.get("order")
    if isinstance(order, dict):
        lines.append(
            f"order {order.get('order')}" + (f" (seed {order['seed']})" if order.get("seed") is not None else "")
        )
    return lines


def resources(reader: SweepReader, sweep_dir: Path, jobs: list[JobView], origin: float | None) -> dict[str, Any]:
    """Series of the running jobs and the latest finished ones; the machine's from the same files."""
    running = [j for j in jobs if j.status == "running"]
    finished = [j for j in jobs if j.status not in ("running", "pending", "not run") and not j.skipped]
    finished.sort(key=lambda j: (j.started or 0.0) + (j.duration_s or 0.0), reverse=True)
    shown = running + finished[:RECENT_FINISHED]
    loaded = [(job, reader.series(sweep_dir / job.job_dir)) for job in shown]
    with_series = [(job, s) for job, s in loaded if s and s.get("t")]
    if origin is None:
        origin = min((s["t"][0] for _, s in with_series), default=time.time())
    job_series = []
    machine: dict[str, list[tuple[float, float]]] = {}
    for job, series in with_series:
        times = [t - origin for t in series["t"]]
        entry: dict[str, Any] = {"job_dir": job.job_dir, "num": job.num, "status": job.status}
        entry["t"] = downsample(times)
        for column in JOB_COLUMNS:
            if column in series:
                entry[column] = downsample(series[column])
        job_series.append(entry)
        for column, values in series.items():
            if column in MACHINE_COLUMNS or (column.startswith("gpu") and column.endswith(GPU_SUFFIXES)):
                machine.setdefault(column, []).extend(zip(times, values, strict=False))
    machine_out: dict[str, Any] = {}
    for column, points in sorted(machine.items()):
        points.sort()
        machine_out[column] = {"t": downsample([p[0] for p in points]), "v": downsample([p[1] for p in points])}
    return {"origin": origin, "jobs": job_series, "machine": machine_out}


def downsample(values: list[float], limit: int = MAX_POINTS) -> list[float | None]:
    """At most ``limit`` evenly spaced values, first and last kept; NaN becomes null (JSON has no NaN)."""
    if len(values) > limit:
        step = (len(values) - 1) / (limit - 1)
        values = [values[round(i * step)] for i in range(limit)]
    return [None if math.isnan(v) else round(v, 4) for v in values]


def swept_values(jobs: Iterable[JobView]) -> dict[str, set[str]]:
    """Override keys that take more than one value across the jobs (in the order they first appear): their values."""
    values: dict[str, set[str]] = {}
    for job in jobs:
        for override in job.overrides:
            parsed = parse_override(override)
            if parsed is not None:
                values.setdefault(parsed[0], set()).add(parsed[1])
    return {key: seen for key, seen in values.items() if len(seen) > 1}


def swept_params(jobs: Iterable[JobView]) -> list[str]:
    return list(swept_values(jobs))


# ---- what the page shows --------------------------------------------------------------------------------------
def metric_choices(jobs: list[JobView]) -> list[str]:
    """Metric names of the completed jobs: headline ones, the experiment's own, then those recording adds."""
    names: dict[str, None] = {}  # in the order the experiments return them: the first is usually the main one
    for job in jobs:
        if job.status in (records.COMPLETED, "skipped"):
            names.update(dict.fromkeys(job.metrics))
    headline = [m for m in records.HEADLINE_METRICS if m in names]
    own = [m for m in names if is_own_metric(m) and m not in headline]
    rest = sorted(m for m in names if not is_own_metric(m))
    return headline + own + rest


def table_metrics(jobs: list[JobView]) -> list[str]:
    return [m for m in metric_choices(jobs) if is_own_metric(m)][:TABLE_METRICS]


def default_param(values: dict[str, set[str]]) -> str | None:
    """A swept parameter with numbers for values (batch, lam), else any, seed last."""
    params = [p for p in values if p != "seed"]
    numeric = [p for p in params if all(as_float(v) is not None for v in values[p])]
    return next(iter(numeric + params + list(values)), None)


def job_row(job: JobView, now: float, metrics: list[str]) -> dict[str, Any]:
    duration = job.duration_s
    if job.status == "running" and job.started is not None:
        duration = max(0.0, now - job.started)
    return {
        "num": job.num,
        "job_dir": job.job_dir,
        "overrides": job.overrides,
        "status": job.status,
        "duration_s": round(duration, 3) if duration is not None else None,
        "metrics": {m: job.metrics[m] for m in metrics if m in job.metrics},
        "error": f"{job.error['type']}: {job.error['message']}" if job.error else None,
    }


def error_row(job: JobView) -> dict[str, Any]:
    assert job.error is not None
    return {"num": job.num, "job_dir": job.job_dir, "status": job.status, **job.error}


def progress(
    jobs: list[JobView], counts: dict[str, int], plan: dict[str, Any] | None, now: float, live: bool
) -> dict[str, Any]:
    """Done over total, and the time left: the mean duration of the jobs finished in this run times the work left
    (pending jobs, and what the running ones have not yet used of that mean), over the parallelism."""
    total = len(jobs)
    done = counts["completed"] + counts["failed"] + counts["skipped"]
    parallelism = plan.get("parallelism") if plan else None
    parallelism = parallelism if isinstance(parallelism, int) and parallelism > 0 else 1
    finished = [j for j in jobs if not j.skipped and j.status not in ("running", "pending", "not run")]
    durations = [j.duration_s for j in finished if j.duration_s]
    eta = None
    if live and durations:
        mean = statistics.fmean(durations)
        running_left = sum(max(0.0, mean - (now - j.started)) for j in jobs if j.status == "running" and j.started)
        eta = (counts["pending"] * mean + running_left) / parallelism
    elif not live:
        eta = 0.0 if counts["running"] == 0 else None
    return {
        "done": done,
        "total": total,
        "fraction": done / total if total else 0.0,
        "parallelism": parallelism,
        "mean_duration_s": statistics.fmean(durations) if durations else None,
        "eta_s": eta,
    }


def chart(jobs: list[JobView], metric: str | None, param: str | None) -> dict[str, Any]:
    """``metric`` against ``param``: one series per combination of the other swept parameters (seed aside), each
    point the mean ± sample std of the completed jobs that share it (over seeds and repeats)."""
    out: dict[str, Any] = {"metric": metric, "param": param, "numeric": True, "series": []}
    if metric is None or param is None:
        return out
    others = [p for p in swept_params(jobs) if p not in (param, "seed")]
    groups: dict[str, dict[str, list[float]]] = {}
    for job in jobs:
        if job.status not in (records.COMPLETED, "skipped") or metric not in job.metrics:
            continue
        chosen = dict(p for p in map(parse_override, job.overrides) if p is not None)
        if param not in chosen:
            continue
        label = " ".join(f"{k}={chosen[k]}" for k in others if k in chosen)
        groups.setdefault(label, {}).setdefault(chosen[param], []).append(job.metrics[metric])
    xs = {x for points in groups.values() for x in points}
    numeric = all(as_float(x) is not None for x in xs)
    out["numeric"] = numeric
    for label in sorted(groups):
        points = [chart_point(x, values, numeric) for x, values in groups[label].items()]
        kept = [p for p in points if p is not None]
        kept.sort(key=lambda p: (float(p["x"]), "") if numeric else (0.0, str(p["x"])))
        out["series"].append({"label": label or metric, "points": kept})
    return out


def chart_point(x: str, values: list[float], numeric: bool) -> dict[str, Any] | None:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return None
    std = statistics.stdev(finite) if len(finite) > 1 else 0.0
    mean = statistics.fmean(finite)
    return {"x": as_float(x) if numeric else x, "label": x, "mean": mean, "std": std, "n": len(finite)}
