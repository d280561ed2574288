"""The one reader of a sweep folder as the sweep's parent and its jobs write it: which folders are sweeps, which
folders below one are jobs, what each job's status, overrides, tags, metrics and error are, and whether the sweep
still runs. ``explaunch report``, ``validate``, ``compare``, the dashboard and clean-up all see a sweep through it.

The sources: ``plan.json`` (every job of this run of the sweep and the parallelism, written by the parent at start),
each job folder's ``job.json`` (its outcome) and ``resources.csv`` (its samples, written as they are taken), and
``sweep.json`` (written when the sweep ends). While the sweep is live a job folder without ``job.json`` is running
and a planned job without a folder is pending; once it is not, such jobs are ``lost`` and ``not run``.

Nothing here writes. Every function returns plain data or :class:`JobView`; record text is passed through as it is.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from explaunch.errors import RecordError
from explaunch.redaction import redact_override
from explaunch.sweepdir import records

PLAN_FILE = records.PLAN_FILE
CONTROLS_FILE = records.CONTROLS_FILE
RESOURCES_CSV = "resources.csv"  # explaunch.measure.resources.CSV_FILE, without importing psutil
SWEEP_MARKERS = ("multirun.yaml", PLAN_FILE, records.SWEEP_FILE, "ledger.jsonl", "tracking.json")
NOT_JOB_FOLDERS = frozenset({"attempts", "artifacts"})
TAGS_KEY = "tags"  # +tags.stage=tested: the job's own labels (config.tags, job.json's tags)
# statuses of a job that did not complete: "lost" is a job that left no record in a sweep no longer running
FAILED_STATUSES = frozenset({records.FAILED, records.TIMEOUT, records.INTERRUPTED, records.CANCELLED, "lost"})
# status of a job as shown -> the count it adds to
COUNTED_AS = {
    records.COMPLETED: "completed",
    "running": "running",
    "pending": "pending",
    "not run": "pending",
    "skipped": "skipped",
    **dict.fromkeys(FAILED_STATUSES, "failed"),
}
COUNT_NAMES = ("completed", "running", "failed", "pending", "skipped")


# ---- sweeps below a folder ------------------------------------------------------------------------------------
def is_sweep(path: Path) -> bool:
    """A folder the sweeper wrote into, or one with job folders right below it (as ``explaunch report`` takes)."""
    if any((path / name).is_file() for name in SWEEP_MARKERS):
        return True
    try:
        return any((child / records.JOB_FILE).is_file() for child in path.iterdir() if child.is_dir())
    except OSError:
        return False


def sweep_folders(root: Path, max_depth: int | None = 3) -> list[Path]:
    """``root`` itself when it is a sweep folder, else the sweep folders below it (``multirun/<date>/<time>``), at
    most ``max_depth`` levels down (None: any), none inside another sweep or a hidden folder."""
    if is_sweep(root):
        return [root]
    found: list[Path] = []
    for current, dirs, _files in os.walk(root):
        here = Path(current)
        depth = len(here.relative_to(root).parts)
        if here != root and is_sweep(here):
            found.append(here)
            dirs.clear()  # a sweep's job folders hold no sweeps
            continue
        deeper = max_depth is None or depth < max_depth
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if deeper else []
    return found


def find_sweeps(root: Path, max_depth: int = 3) -> list[dict[str, Any]]:
    """The sweep folders of :func:`sweep_folders`, newest first. ``path`` is relative to ``root`` (``.`` for root
    itself)."""
    sweeps: list[dict[str, Any]] = [
        {"path": rel_path(path, root), "modified": latest_mtime(path), "live": sweep_live(path, read_plan(path))}
        for path in sweep_folders(root, max_depth)
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
    """``+model=llama`` as ``("model", "llama")``; None for an override without a value."""
    key, sep, value = override.partition("=")
    return (key.lstrip("+~"), value) if sep else None


def override_tags(overrides: Iterable[str]) -> dict[str, str]:
    """The tags an override list sets (``+tags.stage=tested``): what the job's record will hold as ``tags``."""
    tags = {}
    for override in overrides:
        parsed = parse_override(override) if not override.startswith("~") else None
        if parsed is not None and parsed[0].startswith(f"{TAGS_KEY}."):
            tags[parsed[0].removeprefix(f"{TAGS_KEY}.")] = parsed[1]
    return tags


def record_tags(record: records.JobRecord, overrides: Iterable[str]) -> dict[str, str]:
    """A recorded job's tags: its record's (``tags`` in ``job.json``), over those its overrides set."""
    recorded = getattr(record, TAGS_KEY, None)
    tags = override_tags(overrides)
    if isinstance(recorded, dict):
        tags.update({str(k): str(v) for k, v in recorded.items()})
    return tags


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
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class _Cached:
    stamp: tuple[int, int]
    value: Any


class SweepReader:
    """Reads sweeps below ``root``; keeps parsed files until they change (by mtime and size), so that polling a
    large sweep every 2 s re-reads only what the jobs wrote since.

    A ``job.json`` that exists but cannot be read is, by default, a job being written (shown as running); with
    ``strict`` it raises ``RecordError``: records are written atomically, so such a file is damaged, and a report
    must say so."""

    def __init__(self, root: Path, *, strict: bool = False) -> None:
        self.root = root
        self.strict = strict
        self._cache: dict[tuple[str, Path], _Cached] = {}

    def _cached(self, kind: str, path: Path, read: Callable[[Path], Any]) -> Any:
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
                if self.strict:
                    raise
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
            return JobView(rel, num, overrides, status, skipped=skipped, tags=override_tags(overrides))
        record = self.record(path)
        if record is None:
            started = first_mtime(path / ".hydra" / "config.yaml", path)
            view = JobView(rel, num, overrides or self.hydra_overrides(path), "running" if live else "lost")
            view.started = started
            view.tags = override_tags(view.overrides)
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
        job_overrides = list(record.overrides) or overrides
        return JobView(
            job_dir=rel,
            num=record.job_num if record.job_num is not None else num,
            overrides=job_overrides,
            status="skipped" if skipped and record.status == records.COMPLETED else record.status,
            duration_s=record.duration_s,
            started=parse_time(record.start_time),
            metrics={k: float(v) for k, v in record.metrics.items() if isinstance(v, int | float)},
            error=error,
            alerts=[str(a) for a in record.resources.get("alerts", [])],
            skipped=skipped,
            energy_quality=quality,
            energy_quality_reasons=reasons,
            tags=record_tags(record, job_overrides),
        )


def job_order_key(planned: dict[str, dict[str, Any]]) -> Callable[[str], tuple[int, float, str]]:
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
    (the sampler appends a row and closes the file), so ``t = mtime - (last elapsed_s - elapsed_s)``. Columns are
    under today's names: an older sweep's ``rss_mb`` is read as ``rss_mib`` (:func:`records.current_column_name`)."""
    try:
        mtime = path.stat().st_mtime
        with path.open(encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, csv.Error, UnicodeDecodeError):
        return None
    columns: dict[str, list[float]] = {}
    for row in rows:
        try:
            values = {
                records.current_column_name(k): float(v)
                for k, v in row.items()
                if k is not None and v not in (None, "")
            }
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
