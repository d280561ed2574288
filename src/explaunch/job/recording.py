"""Everything recorded around one job, started and finished by the Hydra callbacks.

Each step is guarded: a step that fails (a tracking server down, a sampler error) adds a line to the record's
``callback_errors`` and the job, and the other steps, go on.

What is recorded (:class:`~explaunch.job.recording_settings.RecordingSettings`) comes from the job's config in
explaunch's own app, and from the recording callback's arguments in any other Hydra app. A job that logs its own
MLflow run does it through :mod:`explaunch.tracking` (the only importer of MLflow).
"""

from __future__ import annotations

import dataclasses
import logging
import numbers
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from explaunch import _compat
from explaunch.errors import ConfigError
from explaunch.job.efficiency import tree_cpu_seconds
from explaunch.job.recording_settings import RecordingSettings
from explaunch.redaction import redact_override, redact_resolved, secret_values
from explaunch.sweepdir import records

log = logging.getLogger(__name__)
T = TypeVar("T")

# The config hash of the job about to run where its launch knows it (explaunch's sweeper computed it while planning,
# explaunch.launch.fastlaunch sets it): the record takes it instead of validating the config again (~8 ms a job).
planned_config_hash: ContextVar[str | None] = ContextVar("planned_config_hash", default=None)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def task_config(config: DictConfig) -> DictConfig:
    return OmegaConf.masked_copy(config, [str(k) for k in config if k != "hydra"])


def resolved_config(config: DictConfig) -> dict[str, Any]:
    """The job's config with interpolations resolved (as given where that fails) and secrets redacted, values read
    from the environment included."""
    task = task_config(config)
    raw = OmegaConf.to_container(task, resolve=False)
    try:
        data = OmegaConf.to_container(task, resolve=True)
    except Exception:  # an invalid config is still recorded as given
        data = raw
    assert isinstance(data, dict)
    overrides = OmegaConf.select(config, "hydra.overrides.task", default=None)
    values = secret_values([raw, OmegaConf.to_container(overrides) if overrides is not None else []])
    redacted: dict[str, Any] = redact_resolved({str(k): v for k, v in data.items()}, raw, values)
    return redacted


def config_hash_or_none(config: DictConfig, own_app: bool = True) -> str | None:
    """The job's identity as explaunch's sweeper keys it: explaunch's app validates its config (None when invalid);
    any other app's is the hash of its task config."""
    from explaunch.config import config_hash, task_config_hash, validate

    try:
        return config_hash(validate(config)) if own_app else task_config_hash(config)
    except ConfigError:
        return None


def returned_metrics(value: Any, prefix: str = "") -> dict[str, float]:
    """Another app's task return value as metrics: the numbers of a mapping, nested mappings flattened with ``.``
    (``{"loss": 0.1, "val": {"acc": 0.9}}`` -> ``loss``, ``val.acc``, as MLflow params are named); booleans,
    strings, lists and anything else are left out, as is a return value that is not a mapping."""
    if not isinstance(value, Mapping):
        return {}
    found: dict[str, float] = {}
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, Mapping):
            found.update(returned_metrics(item, name + "."))
        elif isinstance(item, numbers.Real) and not isinstance(item, bool):
            found[name] = float(item)
    return found


def code_dir() -> Path:
    """Where the app's code lives: the folder holding the primary config dir (``conf/``), else the cwd."""
    for source in HydraConfig.get().runtime.config_sources:
        if source.provider == "main" and source.schema == "file":
            return Path(source.path).parent
    return Path.cwd()


def job_error(job_dir: Path, job_return: JobReturn) -> records.JobError:
    exc = _compat.job_return_value(job_return)  # the job's exception (.return_value would re-raise it)
    if not isinstance(exc, BaseException):
        return records.JobError(type="UnknownError", message=repr(exc))
    path = job_dir / records.TRACEBACK_FILE
    records.write_text_atomic(path, "".join(traceback.format_exception(exc)))
    text = str(exc).strip()
    bases = [c.__name__ for c in type(exc).__mro__[1:] if c not in (BaseException, object)]
    return records.JobError(
        type=type(exc).__name__,
        message=text.splitlines()[0] if text else "",
        traceback_file=path.name,
        bases=bases,
    )


def _end_leaked_mlflow_run() -> None:
    from explaunch.tracking.writer import end_leaked_fluent_run

    end_leaked_fluent_run()


class Background(Generic[T]):
    """``func`` run in a daemon thread from now on; ``result()`` waits for it and returns or raises what it did."""

    def __init__(self, name: str, func: Callable[[], T]) -> None:
        self._func = func
        self._result: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"explaunch-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._result = self._func()
        except BaseException as ex:  # handed to whoever asks for the result
            self._error = ex

    def result(self) -> T:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return cast(T, self._result)


class JobRecorder:
    """One per job, in the worker: ``start()`` at job start, ``finish(job_return)`` at job end."""

    def __init__(self, config: DictConfig, settings: RecordingSettings) -> None:
        hydra = HydraConfig.get()
        self.config = config
        self.settings = settings
        self.job_dir = Path(hydra.runtime.output_dir)
        self.multirun = hydra.mode == RunMode.MULTIRUN
        self.job_num: int | None = hydra.job.num if self.multirun else None
        self.sweep_dir = Path(hydra.sweep.dir) if self.multirun else None
        self.overrides = [redact_override(str(o)) for o in hydra.overrides.task]
        self.errors: list[str] = []
        self.config_hash = planned_config_hash.get()
        self.start_time = now_iso()
        self._t0 = time.perf_counter()
        self.launcher = getattr(hydra, "launcher", None) if self.multirun else None  # a single run has none
        self._cpu0: float | None = None  # the job's CPU time so far (a reused worker's), where resources are on
        self.snapshot: Any = None
        self.sampler: Any = None
        self.energy: Any = None
        self.baseline: dict[str, Any] | None = None
        self.tracker: Any = None
        self.run_id: str | None = None
        self.relayed_uri: str | None = None
        self.system_monitor: Any = None

    def guard(self, step: str, func: Callable[[], T]) -> T | None:
        try:
            return func()
        except Exception as ex:
            self.errors.append(f"{step}: {type(ex).__name__}: {ex}")
            log.warning("recording step %r failed, the job goes on: %s: %s", step, type(ex).__name__, ex)
            return None

    # ---- start -----------------------------------------------------------------------------------------------
    def start(self) -> JobRecorder:
        self.guard("reset", _end_leaked_mlflow_run)
        self.snapshot = self.guard("snapshot", self._start_snapshot)
        if self.settings.resources.enabled:
            self._cpu0 = self.guard("efficiency", tree_cpu_seconds)
            self.sampler = self.guard("resources", self._start_sampler)
        if self.settings.energy.enabled:
            self.baseline = self.guard("energy baseline", self._baseline)
            self.energy = self.guard("energy", self._start_energy)
        if self.settings.tracking.backend == "mlflow":
            self.guard("mlflow", self._start_run)
        return self

    def _start_snapshot(self) -> Background[Any]:
        """The snapshot is taken in a thread while the job runs (git's processes take ~10 ms); the record takes it
        when the job ends. What the job may change meanwhile (the environment, the cwd) is read here first."""
        from explaunch.job.snapshot import take_snapshot

        seed = OmegaConf.select(self.config, "seed", default=None)
        where, environ, job_dir, overrides = code_dir(), dict(os.environ), self.job_dir, self.overrides
        return Background(
            "snapshot",
            lambda: take_snapshot(code_dir=where, job_dir=job_dir, seed=seed, overrides=overrides, environ=environ),
        )

    def _start_sampler(self) -> Any:
        from explaunch.measure.resources import CSV_FILE, AlertThresholds, ResourceSampler

        resources = self.settings.resources
        alerts = AlertThresholds(**OmegaConf.to_container(resources.alerts))  # type: ignore[arg-type]
        self.job_dir.mkdir(parents=True, exist_ok=True)
        return ResourceSampler(self.job_dir / CSV_FILE, resources.interval_s, alerts).start()

    def _baseline(self) -> dict[str, Any] | None:
        """The host's idle power, measured by the first job of the sweep on this host (see measure.baseline)."""
        from explaunch.measure.baseline import host_baseline, resolve_seconds

        seconds = resolve_seconds(self.settings.energy.baseline_s)
        if seconds <= 0:
            return None
        return host_baseline(self.sweep_dir or self.job_dir, seconds, self.settings.energy)

    def _start_energy(self) -> Any:
        """The whole job's energy: the job's process tree, and the GPUs the job was given (none on ``cpu``)."""
        from explaunch.measure.energy import EnergyTracker, job_gpus

        gpus = job_gpus(self.settings.device, list(self.settings.gpu_ids))
        csv = self.job_dir / "emissions.csv"
        tracker = EnergyTracker.from_config(self.settings.energy, gpus, csv_path=csv, await_start=False)
        return tracker.__enter__()

    def _start_run(self) -> None:
        """The job's own MLflow run (SLURM, single runs, system metrics); none where the sweep's relay logs it."""
        from explaunch.tracking.sweeprun import job_store, start_job_run
        from explaunch.tracking.writer import MlflowTracker, job_run_tags, start_system_metrics

        tracking = self.settings.tracking
        sweep, uri = job_store(self.sweep_dir, tracking.uri, Path(HydraConfig.get().runtime.cwd))
        if sweep is not None and sweep.logged_by == "sweep":  # the sweep's relay logs this job's run from its record
            self.relayed_uri = uri
            return
        self.tracker = MlflowTracker(uri)
        user = self.user_tags(resolved_config(self.config))
        tags = job_run_tags(self.job_dir, socket.gethostname(), self.sweep_dir, self.job_num, user)
        self.run_id = start_job_run(self.tracker, sweep, tracking.experiment, self.job_dir, tags, self.overrides)
        if tracking.system_metrics:
            self.system_monitor = start_system_metrics(self.run_id, uri, self.settings.resources.interval_s)

    def user_tags(self, config: dict[str, Any]) -> dict[str, str]:
        """The job's own labels (``+tags.stage=tested``) from its resolved config; only explaunch's app has them."""
        tags = config.get("tags") if self.settings.own_app else None
        return {str(k): str(v) for k, v in tags.items()} if isinstance(tags, dict) else {}

    # ---- finish ----------------------------------------------------------------------------------------------
    def finish(self, job_return: JobReturn) -> records.JobRecord:
        wall_s, cpu_s = time.perf_counter() - self._t0, self._cpu_used()
        metrics: dict[str, float] = {}
        energy: dict[str, Any] = {}
        resources: dict[str, Any] = {}
        if self.energy is not None:  # first: the sidecar takes its last sample while the rest is collected
            self.guard("energy", self.energy.request_stop)
        if self.sampler is not None:
            summary = self.guard("resources", self.sampler.stop)
            if summary is not None:
                metrics.update(summary.metrics())
                resources = summary.to_dict()
        if self.system_monitor is not None:
            self.guard("mlflow system metrics", self.system_monitor.finish)
        completed = job_return.status == JobStatus.COMPLETED
        returned = job_return.return_value if completed else {}
        if self.settings.own_app:  # explaunch.job.task.run: {"metrics": ..., "info": ...}
            result = returned if isinstance(returned, dict) else {}
        else:  # any other app's task: its returned mapping's numbers are its metrics
            result = {"metrics": returned_metrics(returned)}
        taken = self.guard("snapshot", self.snapshot.result) if self.snapshot is not None else None
        snapshot = taken.to_dict() if taken is not None else {}
        error = None if completed else job_error(self.job_dir, job_return)
        config = resolved_config(self.config)
        if self.energy is not None:  # the reading, by now computed by the sidecar
            self.guard("energy", lambda: self._stop_energy(metrics, energy))
        if self.baseline is not None:
            self.guard("energy baseline", lambda: self._adjust(result, metrics, energy))
        if cpu_s is not None:
            self.guard("efficiency", lambda: self._efficiency(cpu_s, wall_s, result, metrics, resources))
        record = records.JobRecord(
            status=records.COMPLETED if error is None else records.status_of_error(error.type, error.message),
            overrides=self.overrides,
            config=config,
            config_hash=self.config_hash or config_hash_or_none(self.config, self.settings.own_app),
            start_time=self.start_time,
            end_time=now_iso(),
            duration_s=time.perf_counter() - self._t0,
            job_num=self.job_num,
            metrics={**result.get("metrics", {}), **metrics},
            info={"host": socket.gethostname(), "pid": os.getpid(), **result.get("info", {})},
            error=error,
            env_hash=snapshot.get("env_hash"),
            snapshot=snapshot,
            energy=energy,
            resources=resources,
            tracking=self._tracking_info(),
            callback_errors=list(self.errors),
            tags=self.user_tags(config),
        )
        records.write_job_record(self.job_dir, record)
        if self.run_id is not None:
            before = len(self.errors)
            self.guard("mlflow", lambda: self._log_run(record))
            if len(self.errors) > before:  # the record must say that its MLflow run is incomplete
                record = dataclasses.replace(record, callback_errors=list(self.errors))
                records.write_job_record(self.job_dir, record)
        return record

    def _cpu_used(self) -> float | None:
        now = self.guard("efficiency", tree_cpu_seconds) if self._cpu0 is not None else None
        return None if now is None or self._cpu0 is None else now - self._cpu0

    def _efficiency(
        self, cpu_s: float, wall_s: float, result: dict[str, Any], metrics: dict[str, float], resources: dict[str, Any]
    ) -> None:
        """``cpu_efficiency``, and ``gpu_efficiency`` where the sampler saw the job's GPUs (job.efficiency)."""
        from explaunch.job import efficiency

        on_cpu = str((result.get("info") or {}).get("device", "")).startswith("cpu")  # what the experiment ran on
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        gpus = [] if on_cpu else efficiency.job_gpu_indices(self.settings.device, self.settings.gpu_ids, visible)
        means = resources.get("mean") if self.sampler is not None else None
        found = efficiency.measure(cpu_s, wall_s, self.launcher, means, gpus)
        metrics.update(found.metrics())
        resources["efficiency"] = found.to_dict()

    def _stop_energy(self, metrics: dict[str, float], energy: dict[str, Any]) -> None:
        self.energy.__exit__(None, None, None)
        if self.energy.reading is not None:
            metrics.update(self.energy.reading.metrics("job_energy"))
            energy.update(self.energy.reading.to_dict(), region="the whole job (set-up, loading, every window)")
        else:
            energy["error"] = self.energy.error

    def _adjust(self, result: dict[str, Any], metrics: dict[str, float], energy: dict[str, Any]) -> None:
        """Energy less the host's idle power over the same window: the measured region's and the whole job's."""
        from explaunch.measure.baseline import adjust

        assert self.baseline is not None
        energy["baseline"] = self.baseline
        window = (result.get("info") or {}).get("energy") or {}
        for prefix, reading in (("", window), ("job_", energy)):
            adjusted = adjust(reading, self.baseline) if "components" in reading else None
            if adjusted is not None:
                watts, joules, components = adjusted
                metrics[f"{prefix}baseline_power_w"] = watts
                metrics[f"{prefix}energy_adjusted_joules"] = joules
                reading["adjusted"] = {"baseline_power_w": watts, "joules": joules, "components": components}

    def _tracking_info(self) -> dict[str, Any]:
        from explaunch.redaction import redact

        if self.relayed_uri is not None:  # the relay adds run_id once it has logged the run
            return {"backend": "mlflow", "uri": redact("uri", self.relayed_uri), "logged_by": "sweep"}
        if self.tracker is None:
            return {"backend": self.settings.tracking.backend}
        return {"backend": "mlflow", "uri": redact("uri", self.tracker.tracking_uri), "run_id": self.run_id}

    def _log_run(self, record: records.JobRecord) -> None:
        assert self.run_id is not None
        registered = self.tracker.log_job(
            self.run_id, record, self.job_dir, artifacts=bool(self.settings.tracking.log_artifacts)
        )
        if registered is not None:
            tracking = {**record.tracking, "registered_model": registered}
            records.write_job_record(self.job_dir, dataclasses.replace(record, tracking=tracking))
