"""Job and sweep records: versioned, written atomically, and the only readers of them.

A job folder's ``job.json`` is the source of truth for that job; ``sweep.json`` (and ``sweep.csv``) in the sweep
folder summarise the job folders beneath it and can always be rebuilt from them.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from explaunch.errors import RecordError

JOB_SCHEMA_VERSION = 1
SWEEP_SCHEMA_VERSION = 1
JOB_FILE = "job.json"
SWEEP_FILE = "sweep.json"
SWEEP_CSV = "sweep.csv"
TRACEBACK_FILE = "traceback.txt"
PLAN_FILE = "plan.json"  # the sweep's parent: what this run of the sweep means to do, rewritten at each (re)start
CONTROLS_FILE = "controls.json"  # the sweep's parent: what its limits, budgets and rules did, as the sweep goes

COMPLETED = "completed"
FAILED = "failed"
TIMEOUT = "timeout"  # ended at hydra.sweeper.job_timeout_s
INTERRUPTED = "interrupted"  # Ctrl-C / SIGTERM while it ran
CANCELLED = "cancelled"  # cancelled on the scheduler by someone else than the sweep (scancel)
# error type (as recorded) -> status other than "failed"
STATUS_OF_ERROR = {"JobTimeout": TIMEOUT, "JobInterrupted": INTERRUPTED, "JobCancelled": CANCELLED}


def status_of_error(error_type: str, message: str) -> str:
    """``timeout`` / ``interrupted`` for the errors that mean it (submitit raises UncompletedJobError in a job that
    reached SLURM's time limit and is not requeued), else ``failed``."""
    if error_type == "UncompletedJobError" and "timed-out" in message:
        return TIMEOUT
    return STATUS_OF_ERROR.get(error_type, FAILED)


# Shown in sweep.json / sweep.csv rows; every metric stays in job.json.
HEADLINE_METRICS = (
    "throughput_e2e_tokens_per_s",
    "throughput_decode_tokens_per_s",
    "latency_batch_p50_s",
    "ttft_p50_s",
    "memory_peak_rss_mib",
    "energy_joules",
    "energy_per_output_token_j",
    "tokens_per_joule",
)

_KWH = 3.6e6  # joules (explaunch.measure.energy.JOULES_PER_KWH, without importing the meters)
# Metrics renamed since records of schema version 1 were first written: old name -> (new name, factor to the new
# unit). Records on disk keep the names they were written with; ``JobRecord.from_dict`` gives every reader the new
# ones, so that a report, the dashboard and ``explaunch reproduce`` line an old job up with a new one. This is the
# one place that knows the old names (the resource sampler's, one per GPU, by rule: :func:`current_column_name`).
RENAMED_METRICS: dict[str, tuple[str, float]] = {
    "throughput_tokens_per_s": ("throughput_e2e_tokens_per_s", 1.0),
    "memory_peak_rss_mb": ("memory_peak_rss_mib", 1.0),  # it always held MiB
    "memory_peak_rss_total_mb": ("memory_peak_rss_total_mib", 1.0),  # sharded: summed over the processes
    "memory_cuda_max_allocated_mb": ("memory_cuda_max_allocated_mib", 1.0),
    "job_gpu_energy_joules_nvml": ("job_energy_gpu_joules", 1.0),
    "energy_duration_s": ("energy_window_s", 1.0),
    "job_energy_duration_s": ("job_energy_window_s", 1.0),
    **{
        f"{prefix}_{component}_kwh": (f"{prefix}_{component}_joules", _KWH)
        for prefix in ("energy", "job_energy")
        for component in ("cpu", "gpu", "ram")
    },
}


# The resource sampler's columns that held MiB under an ``_mb`` name (``resources.csv``, and the keys of a record's
# ``resources`` peak and mean); read as ``..._mib``. ``disk_free_gb`` is GB (1e9 bytes) and keeps its name.
_OLD_MIB_COLUMN = re.compile(r"(rss|disk_read|disk_write|net_sent|net_recv|gpu\d+_memory)_mb")
# The job's metrics made from those columns (``explaunch.measure.resources.ResourceSummary.metrics``).
_RESOURCE_METRIC = re.compile(r"(resources_(?:peak|mean)_)(.+)")


def current_column_name(column: str) -> str:
    """A ``resources.csv`` column under today's name: an old ``rss_mb`` is ``rss_mib`` (it always held MiB)."""
    return f"{column[: -len('_mb')]}_mib" if _OLD_MIB_COLUMN.fullmatch(column) else column


def renamed_metric(name: str) -> tuple[str, float] | None:
    """(new name, factor to the new unit) of an old metric name; None for a current one. The resource metrics follow
    the sampler's columns, one per GPU, so they are renamed by :func:`current_column_name` rather than listed."""
    if name in RENAMED_METRICS:
        return RENAMED_METRICS[name]
    resource = _RESOURCE_METRIC.fullmatch(name)
    if resource is not None and _OLD_MIB_COLUMN.fullmatch(resource.group(2)):
        return resource.group(1) + current_column_name(resource.group(2)), 1.0  # resources_peak_rss_mb: MiB
    return None


def current_metric_names(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """``metrics`` with the old names of :data:`RENAMED_METRICS` (and the resource metrics of
    :func:`current_column_name`) replaced (values in the new unit), in their order; a metric recorded under both
    names keeps the new name's value."""
    out: dict[str, Any] = {}
    for name, value in metrics.items():
        renamed = renamed_metric(name)
        if renamed is None:
            out[name] = value
        elif renamed[0] not in metrics:
            new, factor = renamed
            out[new] = value * factor if factor != 1.0 and isinstance(value, int | float) else value
    return out


def current_resource_names(resources: Mapping[str, Any]) -> dict[str, Any]:
    """A record's ``resources`` with the columns of its ``peak`` and ``mean`` under today's names."""
    out = dict(resources)
    for key in ("peak", "mean"):
        if isinstance(out.get(key), Mapping):
            out[key] = {current_column_name(column): value for column, value in out[key].items()}
    return out


@dataclass(frozen=True)
class JobError:
    type: str
    message: str
    traceback_file: str | None = None
    bases: list[str] = field(default_factory=list)  # the exception's base classes, to match retry rules


@dataclass(frozen=True)
class JobRecord:
    status: str
    overrides: list[str]
    config: dict[str, Any]
    config_hash: str | None
    start_time: str
    end_time: str
    duration_s: float
    job_num: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # how the experiment measured (device, methods, sources)
    error: JobError | None = None
    env_hash: str | None = None
    snapshot: dict[str, Any] = field(default_factory=dict)  # code, packages, platform, hardware, command, env
    energy: dict[str, Any] = field(default_factory=dict)  # the whole job (the measured region is in info)
    resources: dict[str, Any] = field(default_factory=dict)  # samples, peak, mean, alerts
    tracking: dict[str, Any] = field(default_factory=dict)  # MLflow run id and store
    callback_errors: list[str] = field(default_factory=list)  # what failed in recording; the job went on
    attempts: list[dict[str, Any]] = field(default_factory=list)  # earlier attempts (retries, OOM fallback)
    tags: dict[str, str] = field(default_factory=dict)  # the user's labels (+tags.stage=tested), also its run's tags
    schema_version: int = JOB_SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> JobRecord:
        if not isinstance(data, Mapping):
            raise RecordError(f"a job record is a JSON object, not {type(data).__name__}")
        version = data.get("schema_version")
        if version != JOB_SCHEMA_VERSION:
            raise RecordError(f"job record schema_version {version!r} is not supported (expected {JOB_SCHEMA_VERSION})")
        values = dict(data)
        if isinstance(values.get("metrics"), Mapping):
            values["metrics"] = current_metric_names(values["metrics"])
        if isinstance(values.get("resources"), Mapping):
            values["resources"] = current_resource_names(values["resources"])
        try:
            if values.get("error") is not None:
                values["error"] = JobError(**values["error"])
            return cls(**values)
        except TypeError as ex:  # a missing or unknown field
            raise RecordError(f"job record does not match schema version {version}: {ex}") from None


def energy_quality(record: JobRecord) -> tuple[str | None, list[str]]:
    """The quality of the measured window's energy (``info.energy``): ``ok``, or ``low`` with the reasons (a window
    too short, too few samples); None where the job measured none or was recorded before energy had a quality."""
    energy = record.info.get("energy")
    if not isinstance(energy, Mapping) or not isinstance(energy.get("quality"), str):
        return None, []
    reasons = energy.get("quality_reasons")
    return str(energy["quality"]), [str(r) for r in reasons] if isinstance(reasons, list) else []


@dataclass(frozen=True)
class SweepRow:
    job_dir: str  # relative to the sweep folder
    job_num: int | None
    overrides: list[str]
    status: str
    duration_s: float
    metrics: dict[str, float]
    error: str | None = None


@dataclass(frozen=True)
class SweepRecord:
    sweep_dir: str
    jobs: list[SweepRow]
    stop_reason: str | None = None  # why jobs were left unrun (failure rate, interrupt, time limit)
    not_run: list[list[str]] = field(default_factory=list)  # their overrides
    # the mean of the jobs' cpu_efficiency (the share of their allocated CPU time they used); None: none has one
    mean_cpu_efficiency: float | None = None
    # what the sweep's controls did (hydra.sweeper.order, limits, cooldown, budget, stop_when): controls.json
    controls: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SWEEP_SCHEMA_VERSION

    @property
    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for row in self.jobs:
            counts[row.status] = counts.get(row.status, 0) + 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "counts": self.counts}

    @classmethod
    def from_dict(cls, data: Any) -> SweepRecord:
        if not isinstance(data, Mapping):
            raise RecordError(f"a sweep record is a JSON object, not {type(data).__name__}")
        version = data.get("schema_version")
        if version != SWEEP_SCHEMA_VERSION:
            raise RecordError(
                f"sweep record schema_version {version!r} is not supported (expected {SWEEP_SCHEMA_VERSION})"
            )
        return cls(
            sweep_dir=data["sweep_dir"],
            jobs=[SweepRow(**row) for row in data["jobs"]],
            stop_reason=data.get("stop_reason"),
            not_run=list(data.get("not_run", [])),
            mean_cpu_efficiency=data.get("mean_cpu_efficiency"),
            controls=dict(data.get("controls") or {}),
            schema_version=version,
        )


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with tmp.open("x", encoding="utf-8") as handle:  # "x" honours the umask, unlike mkstemp's 0600
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def write_job_record(job_dir: Path, record: JobRecord) -> Path:
    path = job_dir / JOB_FILE
    write_json_atomic(path, record.to_dict())
    return path


def read_job_record(path: Path) -> JobRecord:
    """Read ``job.json`` (or the job folder holding it)."""
    path = path / JOB_FILE if path.is_dir() else path
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecordError(f"no job record at {path}") from None
    except (OSError, json.JSONDecodeError) as ex:
        raise RecordError(f"unreadable job record {path}: {ex}") from None
    return JobRecord.from_dict(data)


def iter_job_records(sweep_dir: Path) -> Iterator[tuple[Path, JobRecord]]:
    """Every job record under ``sweep_dir``, in job-number order (folders without a number last)."""
    found = []
    for path in sweep_dir.rglob(JOB_FILE):
        record = read_job_record(path)
        found.append((path.parent, record))
    found.sort(key=lambda item: (item[1].job_num is None, item[1].job_num or 0, str(item[0])))
    yield from found


def summarize_sweep(
    sweep_dir: Path,
    stop_reason: str | None = None,
    not_run: list[list[str]] | None = None,
    controls: dict[str, Any] | None = None,
) -> SweepRecord:
    rows = []
    efficiencies = []
    for job_dir, record in iter_job_records(sweep_dir):
        if isinstance(record.metrics.get("cpu_efficiency"), int | float):
            efficiencies.append(float(record.metrics["cpu_efficiency"]))
        rows.append(
            SweepRow(
                job_dir=str(job_dir.relative_to(sweep_dir)),
                job_num=record.job_num,
                overrides=record.overrides,
                status=record.status,
                duration_s=record.duration_s,
                metrics={k: record.metrics[k] for k in HEADLINE_METRICS if k in record.metrics},
                error=f"{record.error.type}: {record.error.message}" if record.error else None,
            )
        )
    from explaunch.redaction import redact_override

    hidden = [[redact_override(o) for o in overrides] for overrides in not_run or []]
    mean = sum(efficiencies) / len(efficiencies) if efficiencies else None
    return SweepRecord(str(sweep_dir), rows, stop_reason, hidden, mean_cpu_efficiency=mean, controls=controls or {})


def write_sweep_record(
    sweep_dir: Path,
    stop_reason: str | None = None,
    not_run: list[list[str]] | None = None,
    controls: dict[str, Any] | None = None,
) -> SweepRecord:
    """Rebuild ``sweep.json`` and ``sweep.csv`` from the job folders under ``sweep_dir``."""
    sweep = summarize_sweep(sweep_dir, stop_reason, not_run, controls)
    write_json_atomic(sweep_dir / SWEEP_FILE, sweep.to_dict())
    write_text_atomic(sweep_dir / SWEEP_CSV, sweep_csv(sweep))
    return sweep


def sweep_csv(sweep: SweepRecord) -> str:
    metric_names = [m for m in HEADLINE_METRICS if any(m in row.metrics for row in sweep.jobs)]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["job_dir", "job_num", "overrides", "status", "duration_s", *metric_names, "error"])
    for row in sweep.jobs:
        metrics = [row.metrics.get(m, "") for m in metric_names]
        writer.writerow(
            [row.job_dir, row.job_num, " ".join(row.overrides), row.status, row.duration_s, *metrics, row.error or ""]
        )
    return out.getvalue()


def read_sweep_record(sweep_dir: Path) -> SweepRecord:
    path = sweep_dir / SWEEP_FILE
    try:
        return SweepRecord.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise RecordError(f"no sweep record at {path}") from None
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as ex:
        raise RecordError(f"unreadable sweep record {path}: {ex}") from None
