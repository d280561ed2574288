"""What the dashboard shows, read from a sweep folder as the sweep parent and its jobs write it.

Nothing runs inside the jobs for it. The sources: ``plan.json`` (every job of this run of the sweep and the
parallelism, written by the parent at start), each job folder's ``job.json`` (its outcome) and ``resources.csv`` (its
samples, written as they are taken), and ``sweep.json`` (written when the sweep ends). While the sweep is live a job
folder without ``job.json`` is running and a planned job without a folder is pending.

Every function returns plain data (dicts, lists, numbers, strings) that becomes the page's JSON; record text is
passed through as it is and escaped by the page, which builds its DOM with ``textContent``.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import socket
import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from explaunch.errors import RecordError
from explaunch.redaction import redact_override
from explaunch.sweepdir import records

PLAN_FILE = "plan.json"  # written by explaunch.launch.sweeper (PLAN_FILE there)
RESOURCES_CSV = "resources.csv"  # explaunch.measure.resources.CSV_FILE, without importing psutil
SWEEP_MARKERS = ("multirun.yaml", PLAN_FILE, records.SWEEP_FILE, "ledger.jsonl")
NOT_JOB_FOLDERS = frozenset({"attempts", "artifacts"})
FAILED_STATUSES = frozenset({records.FAILED, records.TIMEOUT, records.INTERRUPTED, records.CANCELLED, "lost"})
# status shown in the table -> the count it adds to
COUNTED_AS = {
    records.COMPLETED: "completed",
    "running": "running",
    "pending": "pending",
    "not run": "pending",
    "skipped": "skipped",
    **dict.fromkeys(FAILED_STATUSES, "failed"),
}
COUNT_NAMES = ("completed", "running", "failed", "pending", "skipped")
TABLE_METRICS = 8  # the headline metrics of an LLM job (records.HEADLINE_METRICS), or an experiment's first few
RECENT_FINISHED = 6  # finished jobs whose resource series are shown beside the running ones
MAX_POINTS = 200  # per series, after downsampling
MACHINE_COLUMNS = ("system_cpu_percent", "system_memory_percent")
JOB_COLUMNS = ("cpu_percent", "rss_mb")


# ---- sweeps below a folder ------------------------------------------------------------------------------------
def is_sweep(path: Path) -> bool:
    """A folder the sweeper wrote into, or one with job folders right below it (as ``explaunch report`` takes)."""
    if any((path / name).is_file() for name in SWEEP_MARKERS):
        return True
    try:
        return any((child / records.JOB_FILE).is_file() for child in path.iterdir() if child.is_dir())
    except OSError:
        return False


def find_sweeps(root: Path, max_depth: int = 3) -> list[dict[str, Any]]:
    """``root`` itself when it is a sweep folder, else the sweep folders below it (``multirun/<date>/<time>``),
    newest first. ``path`` is relative to ``root`` (``.`` for root itself)."""
    found: list[Path] = []
    if is_sweep(root):
        found.append(root)
    else:
        for current, dirs, _files in os.walk(root):
            here = Path(current)
            depth = len(here.relative_to(root).parts)
            if here != root and is_sweep(here):
                found.append(here)
                dirs.clear()  # a sweep's job folders hold no sweeps
                continue
            dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if depth < max_depth else []
    sweeps: list[dict[str, Any]] = [
        {"path": rel_path(path, root), "modified": latest_mtime(path), "live": sweep_live(path, read_plan(path))}
        for path in found
    ]
    sweeps.sort(key=lambda s: s["modified"], reverse=True)
    return sweeps


def rel_path(path: Path, root: Path) -> str:
    rel = path.relative_to(root).as_posix()
    return rel or "."


def latest_mtime(sweep_dir: Path) -> float:
    times = [(sweep_dir / name).stat().st_mtime for name in SWEEP_MARKERS if (sweep_dir / name).exists()]
    return max(times, default=sweep_dir.stat().st_mtime)


# ---- the sweep's own files ------------------------------------------------------------------------------------
def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_plan(sweep_dir: Path) -> dict[str, Any] | None:
    plan = read_json(sweep_dir / PLAN_FILE)
    return plan if isinstance(plan, dict) and isinstance(plan.get("jobs"), list) else None


def sweep_live(sweep_dir: Path, plan: dict[str, Any] | None) -> bool:
    """Whether the sweep still runs: no ``sweep.json`` newer than its plan, and its parent (on this host) alive."""
    summary = sweep_dir / records.SWEEP_FILE
    plan_path = sweep_dir / PLAN_FILE
    if summary.exists() and (plan is None or summary.stat().st_mtime >= plan_path.stat().st_mtime):
        return False
    if plan is None:
        return not summary.exists() and (sweep_dir / "multirun.yaml").exists()
    if plan.get("host") == socket.gethostname() and isinstance(plan.get("pid"), int):
        return pid_alive(plan["pid"])
    return True


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def job_folders(sweep_dir: Path, max_depth: int = 4) -> list[Path]:
    """Folders holding a job: a ``job.json`` or Hydra's ``.hydra/`` (written when the job starts)."""
    found = []
    for current, dirs, files in os.walk(sweep_dir):
        here = Path(current)
        if records.JOB_FILE in files or ".hydra" in dirs:
            found.append(here)
            dirs.clear()
            continue
        depth = len(here.relative_to(sweep_dir).parts)
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in NOT_JOB_FOLDERS] if depth < max_depth else []
    return found


def parse_override(override: str) -> tuple[str, str] | None:
    key, sep, value = override.partition("=")
    return (key.lstrip("+~"), value) if sep else None


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


def is_own_metric(name: str) -> bool:
    """The experiment's metrics, as opposed to those recording adds to every job (energy, resources)."""
    return not name.startswith(("resources_", "job_energy_"))


# ---- jobs -----------------------------------------------------------------------------------------------------
@dataclass
class JobView:
    job_dir: str  # relative to the sweep folder
    num: int | None
    overrides: list[str]
    status: str
    duration_s: float | None = None
    started: float | None = None  # epoch seconds
    metrics: dict[str, float] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    alerts: list[str] = field(default_factory=list)
    skipped: bool = False
    energy_quality: str | None = None  # of the measured window: ok / low (records.energy_quality)
    energy_quality_reasons: list[str] = field(default_factory=list)


@dataclass
class _Cached:
    stamp: tuple[int, int]
    value: Any


class SweepReader:
    """Reads sweeps below ``root``; keeps parsed files until they change (by mtime and size), so that polling a
    large sweep every 2 s re-reads only what the jobs wrote since."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._cache: dict[tuple[str, Path], _Cached] = {}

    def _cached(self, kind: str, path: Path, read: Any) -> Any:
        try:
            stat = path.stat()
        except OSError:
            return None
        stamp = (stat.st_mtime_ns, stat.st_size)
        hit = self._cache.get((kind, path))
        if hit is not None and hit.stamp == stamp:
            return hit.value
        value = read(path)
        self._cache[(kind, path)] = _Cached(stamp, value)
        return value

    def record(self, job_dir: Path) -> records.JobRecord | None:
        def read(path: Path) -> records.JobRecord | None:
            try:
                return records.read_job_record(path)
            except RecordError:
                return None  # being written, or not ours: shown as running / unreadable

        result: records.JobRecord | None = self._cached("record", job_dir / records.JOB_FILE, read)
        return result

    def series(self, job_dir: Path) -> dict[str, list[float]] | None:
        result: dict[str, list[float]] | None = self._cached("csv", job_dir / RESOURCES_CSV, read_series)
        return result

    def hydra_overrides(self, job_dir: Path) -> list[str]:
        def read(path: Path) -> list[str]:
            import yaml

            try:
                data = yaml.safe_load(path.read_text(encoding="utf-8"))
            except (OSError, yaml.YAMLError):
                return []
            return [redact_override(str(o)) for o in data] if isinstance(data, list) else []

        result: list[str] = self._cached("overrides", job_dir / ".hydra" / "overrides.yaml", read) or []
        return result

    def thresholds(self, job_dir: Path) -> dict[str, Any]:
        def read(path: Path) -> dict[str, Any]:
            import yaml

            try:
                data = yaml.safe_load(path.read_text(encoding="utf-8"))
                alerts = data["resources"]["alerts"]
            except (OSError, yaml.YAMLError, KeyError, TypeError):
                return {}
            return alerts if isinstance(alerts, dict) else {}

        result: dict[str, Any] = self._cached("config", job_dir / ".hydra" / "config.yaml", read) or {}
        return result

    # ---- one sweep --------------------------------------------------------------------------------------------
    def jobs(self, sweep_dir: Path, plan: dict[str, Any] | None, live: bool) -> list[JobView]:
        planned = {str(j["job_dir"]): j for j in (plan or {}).get("jobs", []) if isinstance(j, dict)}
        folders = {rel_path(path, sweep_dir): path for path in job_folders(sweep_dir)}
        views = []
        for rel in sorted(set(planned) | set(folders), key=job_order_key(planned)):
            entry = planned.get(rel, {})
            path = folders.get(rel)
            view = self.job_view(sweep_dir, rel, path, entry, live)
            views.append(view)
        return views

    def job_view(self, sweep_dir: Path, rel: str, path: Path | None, entry: dict[str, Any], live: bool) -> JobView:
        num = entry.get("num")
        overrides = [str(o) for o in entry.get("overrides", [])]
        skipped = bool(entry.get("skipped"))
        if path is None:
            status = "skipped" if skipped else ("pending" if live else "not run")
            return JobView(rel, num, overrides, status, skipped=skipped)
        record = self.record(path)
        if record is None:
            started = first_mtime(path / ".hydra" / "config.yaml", path)
            view = JobView(rel, num, overrides or self.hydra_overrides(path), "running" if live else "lost")
            view.started = started
            view.alerts = live_alerts(self.series(path), self.thresholds(path)) if live else []
            if not live:
                view.error = {"type": "NoRecord", "message": "the job left no job.json", "traceback": None}
            return view
        error = None
        if record.error is not None:
            trace = record.error.traceback_file
            trace_path = path / trace if trace else None
            error = {
                "type": record.error.type,
                "message": record.error.message,
                "traceback": rel_path(trace_path, self.root) if trace_path and trace_path.is_file() else None,
            }
        quality, reasons = records.energy_quality(record)
        return JobView(
            job_dir=rel,
            num=record.job_num if record.job_num is not None else num,
            overrides=list(record.overrides) or overrides,
            status="skipped" if skipped and record.status == records.COMPLETED else record.status,
            duration_s=record.duration_s,
            started=parse_time(record.start_time),
            metrics={k: float(v) for k, v in record.metrics.items() if isinstance(v, int | float)},
            error=error,
            alerts=[str(a) for a in record.resources.get("alerts", [])],
            skipped=skipped,
            energy_quality=quality,
            energy_quality_reasons=reasons,
        )

    def state(self, sweep_dir: Path, metric: str | None = None, param: str | None = None) -> dict[str, Any]:
        """Everything the page shows for one sweep."""
        now = time.time()
        plan = read_plan(sweep_dir)
        live = sweep_live(sweep_dir, plan)
        jobs = self.jobs(sweep_dir, plan, live)
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
            "sweep": rel_path(sweep_dir, self.root),
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
            "resources": self.resources(sweep_dir, jobs, started),
        }

    def resources(self, sweep_dir: Path, jobs: list[JobView], origin: float | None) -> dict[str, Any]:
        """Series of the running jobs and the latest finished ones; the machine's from the same files."""
        running = [j for j in jobs if j.status == "running"]
        finished = [j for j in jobs if j.status not in ("running", "pending", "not run") and not j.skipped]
        finished.sort(key=lambda j: (j.started or 0.0) + (j.duration_s or 0.0), reverse=True)
        shown = running + finished[:RECENT_FINISHED]
        loaded = [(job, self.series(sweep_dir / job.job_dir)) for job in shown]
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


GPU_SUFFIXES = ("_util_percent", "_memory_percent")


def job_order_key(planned: dict[str, dict[str, Any]]) -> Any:
    def key(rel: str) -> tuple[int, float, str]:
        num = planned.get(rel, {}).get("num")
        if isinstance(num, int):
            return (0, float(num), rel)
        return (0, float(rel), rel) if rel.isdigit() else (1, 0.0, rel)

    return key


def first_mtime(*paths: Path) -> float | None:
    for path in paths:
        with contextlib.suppress(OSError):
            return path.stat().st_mtime
    return None


def parse_time(text: str) -> float | None:
    from datetime import datetime

    try:
        return datetime.fromisoformat(text).timestamp()
    except (TypeError, ValueError):
        return None


def read_series(path: Path) -> dict[str, list[float]] | None:
    """``resources.csv`` as columns, with ``t`` the epoch time of each sample: the file's mtime is its last row's
    (the sampler appends a row and closes the file), so ``t = mtime - (last elapsed_s - elapsed_s)``."""
    try:
        mtime = path.stat().st_mtime
        with path.open(encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, csv.Error, UnicodeDecodeError):
        return None
    columns: dict[str, list[float]] = {}
    for row in rows:
        try:
            values = {k: float(v) for k, v in row.items() if k is not None and v not in (None, "")}
        except (TypeError, ValueError):
            continue  # a row cut by the reader racing the writer
        if "elapsed_s" not in values:
            continue
        for key, value in values.items():
            columns.setdefault(key, []).append(value)
        length = len(columns["elapsed_s"])
        for values_list in columns.values():  # keep columns aligned where a row lacks one
            while len(values_list) < length:
                values_list.append(math.nan)
    if not columns.get("elapsed_s"):
        return None
    last = columns["elapsed_s"][-1]
    columns["t"] = [mtime - (last - e) for e in columns["elapsed_s"]]
    return columns


def downsample(values: list[float], limit: int = MAX_POINTS) -> list[float | None]:
    """At most ``limit`` evenly spaced values, first and last kept; NaN becomes null (JSON has no NaN)."""
    if len(values) > limit:
        step = (len(values) - 1) / (limit - 1)
        values = [values[round(i * step)] for i in range(limit)]
    return [None if math.isnan(v) else round(v, 4) for v in values]


def live_alerts(series: dict[str, list[float]] | None, thresholds: dict[str, Any]) -> list[str]:
    """A running job's alerts, from its samples so far and its ``resources.alerts`` thresholds (the sampler writes
    its own into job.json at the end, with the same words)."""
    if not series:
        return []
    limits = {"memory_percent": 90.0, "cpu_percent": None, "gpu_memory_percent": 95.0, "disk_free_gb": 1.0}
    limits.update({k: v for k, v in thresholds.items() if k in limits})
    checks = [("system_memory_percent", "memory_percent", True), ("cpu_percent", "cpu_percent", True)]
    checks.append(("disk_free_gb", "disk_free_gb", False))
    checks += [(c, "gpu_memory_percent", True) for c in series if c.startswith("gpu") and c.endswith("_memory_percent")]
    alerts = []
    for column, limit_name, above in checks:
        limit = limits.get(limit_name)
        if limit is None or column not in series:
            continue
        for elapsed, value in zip(series["elapsed_s"], series[column], strict=False):
            if (value > limit) if above else (value < limit):
                word = "above" if above else "below"
                alerts.append(f"{column} {value:.1f} {word} the alert threshold {limit:g} at {elapsed:.1f} s")
                break
    return alerts


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


def as_float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None
