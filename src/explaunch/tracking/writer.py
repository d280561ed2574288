"""Writing the MLflow store: :class:`MlflowTracker`, the one writer of runs, whoever logs them (a job logging its own
run, the sweep's relay, reconciling and ``explaunch sync``).

Only ``MlflowClient`` is used, never MLflow's fluent API: no global "active run" exists that could leak from one job
into the next in a reused worker. MLflow is imported inside the functions, so that importing this module costs
nothing. :mod:`explaunch.tracking.store` checks the store before any job; :mod:`explaunch.tracking.reader` reads it.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import math
import os
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from explaunch import _compat
from explaunch.redaction import redact

_MAX_PARAMS, _MAX_METRICS, _MAX_TAGS = 100, 1000, 100  # MLflow's log_batch limits per request
_MAX_PARAM_CHARS = 6000
LOG_FILES = ("*.log", "stdout.txt", "stderr.txt")

# A tracking server that is down must not hold a job for minutes of retries (MLflow defaults: 7 retries, 120 s).
_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}


def artifact_root(uri: str) -> str | None:
    """Artifacts of a sqlite store live beside it in ``mlartifacts/``; a server decides for itself."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()
    return None


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model": {"name": "llama"}}`` -> ``{"model.name": "llama"}``; lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def params_from_config(config: Mapping[str, Any]) -> dict[str, str]:
    """MLflow params: the flattened resolved config, secrets redacted by key name, values cut to MLflow's limit."""
    params = {}
    for key, value in flatten(config).items():
        text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
        params[key] = str(redact(key, text))[:_MAX_PARAM_CHARS]
    return params


@functools.lru_cache(maxsize=8)
def _client(tracking_uri: str, pid: int) -> Any:
    """One client per store and process: building one opens the store (for sqlite: an engine and a schema check,
    ~0.1 s), which a worker running many jobs should pay once. ``pid`` keeps a forked child from sharing it."""
    from mlflow import MlflowClient

    with _opening(tracking_uri):
        return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)  # registry in the same store


@contextlib.contextmanager
def _opening(tracking_uri: str) -> Iterator[None]:
    """Opening a sqlite store waits for any other process opening it: MLflow creates a missing store's tables (and
    migrates an old one) when it opens it, and two processes doing that at once break it (``duplicate column name``,
    ``table ... already exists``): two sweeps started together on a fresh ``mlflow.db``. The lock is the kernel's
    (flock) on the store's folder (or the nearest one that exists): nothing is left behind, and it goes with the
    process however it ends. Where the filesystem cannot lock a folder, the store opens unlocked, as before."""
    if not tracking_uri.startswith("sqlite:///"):
        yield
        return
    folder = Path(tracking_uri.removeprefix("sqlite:///")).parent
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    fd = None
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError:
        pass
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)  # releases the lock


class MlflowTracker:
    def __init__(self, tracking_uri: str) -> None:
        for key, value in _HTTP_DEFAULTS.items():
            os.environ.setdefault(key, value)
        self.tracking_uri = tracking_uri
        self.client = _client(tracking_uri, os.getpid())

    def experiment_id(self, name: str) -> str:
        """The experiment's id, created (with the store itself on first use) when missing."""
        from mlflow.exceptions import MlflowException

        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            return str(experiment.experiment_id)
        try:
            return str(self.client.create_experiment(name, artifact_location=artifact_root(self.tracking_uri)))
        except MlflowException:  # created meanwhile by another process
            experiment = self.client.get_experiment_by_name(name)
            if experiment is None:
                raise
            return str(experiment.experiment_id)

    def start_run(
        self,
        experiment_id: str,
        run_name: str,
        tags: Mapping[str, str],
        parent_run_id: str | None = None,
        start_time_ms: int | None = None,
    ) -> str:
        all_tags = {k: str(redact(k, v)) for k, v in tags.items()}
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        run = self.client.create_run(experiment_id, start_time=start_time_ms, run_name=run_name, tags=all_tags)
        return str(run.info.run_id)

    def running(self, run_id: str) -> bool:
        """Whether ``run_id`` exists here and is still RUNNING (an attempt that was stopped and requeued)."""
        try:
            return str(self.client.get_run(run_id).info.status) == "RUNNING"
        except Exception:  # deleted, another store: start a new run
            return False

    def log(
        self,
        run_id: str,
        *,
        params: Mapping[str, str] | None = None,
        metrics: Mapping[str, float] | None = None,
        tags: Mapping[str, str] | None = None,
        step: int = 0,
    ) -> None:
        """Everything in as few ``log_batch`` calls as MLflow's per-request limits allow."""
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        param_list = [Param(k, v) for k, v in (params or {}).items()]
        metric_list = [
            Metric(k, float(v), now, step) for k, v in (metrics or {}).items() if isinstance(v, (int, float))
        ]
        metric_list = [m for m in metric_list if not math.isinf(m.value)]
        tag_list = [RunTag(k, str(redact(k, v))) for k, v in (tags or {}).items()]
        batches = max(
            math.ceil(len(param_list) / _MAX_PARAMS),
            math.ceil(len(metric_list) / _MAX_METRICS),
            math.ceil(len(tag_list) / _MAX_TAGS),
        )
        for i in range(batches):
            self.client.log_batch(
                run_id,
                metrics=metric_list[i * _MAX_METRICS : (i + 1) * _MAX_METRICS],
                params=param_list[i * _MAX_PARAMS : (i + 1) * _MAX_PARAMS],
                tags=tag_list[i * _MAX_TAGS : (i + 1) * _MAX_TAGS],
            )

    def log_series(self, run_id: str, series: Mapping[str, list[list[float]]]) -> None:
        """Metric histories ``{name: [[step, value], ...]}`` (per-epoch curves), in as few requests as allowed."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        points = [Metric(name, float(v), now, int(step)) for name, pts in series.items() for step, v in pts]
        for i in range(0, len(points), _MAX_METRICS):
            self.client.log_batch(run_id, metrics=points[i : i + _MAX_METRICS])

    def register_model(self, run_id: str, name: str, artifact_path: str) -> str:
        """A new version of registered model ``name`` made of the run's artifact, linked to the run."""
        from mlflow.exceptions import MlflowException

        with contextlib.suppress(MlflowException):  # it exists already: add a version
            self.client.create_registered_model(name)
        source = f"{self.client.get_run(run_id).info.artifact_uri}/{artifact_path}"
        return str(self.client.create_model_version(name, source=source, run_id=run_id).version)

    def log_artifacts(self, run_id: str, paths: Iterable[Path], base: Path) -> None:
        """Files and folders, kept at their place relative to ``base`` (the job folder)."""
        for path in paths:
            if not path.exists():
                continue
            parent = path.relative_to(base).parent
            artifact_path = None if str(parent) == "." else str(parent)
            if path.is_dir():
                self.client.log_artifacts(run_id, str(path), artifact_path=str(path.relative_to(base)))
            else:
                self.client.log_artifact(run_id, str(path), artifact_path=artifact_path)

    def finish(self, run_id: str, failed: bool, end_time_ms: int | None = None) -> None:
        self.client.set_terminated(run_id, status="FAILED" if failed else "FINISHED", end_time=end_time_ms)

    def log_job(self, run_id: str, record: Any, job_dir: Path, *, artifacts: bool) -> dict[str, Any] | None:
        """A finished job's record as its run (params, metrics, per-step series, tags, artifacts, a registered
        model), then the run closed. Returns the registered model (name, version) when the job asked for one."""
        from explaunch.sweepdir import records

        tags = {
            **record.tags,  # the user's own labels (+tags.stage=tested); explaunch's own tags below win
            "status": record.status.upper(),  # COMPLETED, FAILED, TIMEOUT, INTERRUPTED, CANCELLED
            "git_commit": record.snapshot.get("git", {}).get("commit") or "",
            "config_hash": record.config_hash or "",
            "env_hash": record.env_hash or "",
            "mlflow.source.git.commit": record.snapshot.get("git", {}).get("commit") or "",
        }
        if record.error is not None:
            tags["error_type"] = record.error.type
            tags["error"] = record.error.message[:5000]
        if record.callback_errors:
            tags["callback_errors"] = "; ".join(record.callback_errors)[:5000]
        series = record.info.get("series") or {}  # per-step curves (epochs): logged with their steps, not at 0
        plain = {k: v for k, v in record.metrics.items() if k not in series}
        self.log(run_id, params=params_from_config(record.config), metrics=plain, tags=tags)
        if series:
            self.log_series(run_id, series)
        registered = None
        if artifacts:
            files = [job_dir / n for n in (records.JOB_FILE, records.TRACEBACK_FILE, "resources.csv")]
            files += [job_dir / "emissions.csv", job_dir / "git.patch", job_dir / ".hydra"]
            files += [job_dir / "artifacts"]  # what an experiment collected (a script's outputs)
            # files the experiment wrote and named in its record (generated outputs, per-call figures)
            files += [job_dir / str(record.info[k]) for k in ("outputs_file", "iterations_file") if record.info.get(k)]
            files += [p for pattern in LOG_FILES for p in sorted(job_dir.glob(pattern))]
            self.log_artifacts(run_id, files, job_dir)
            wanted = record.info.get("register_model")
            if wanted:
                version = self.register_model(run_id, wanted["name"], wanted["artifact_path"])
                registered = {"name": wanted["name"], "version": version}
        self.finish(run_id, failed=record.status != records.COMPLETED, end_time_ms=epoch_ms(record.end_time))
        return registered


def epoch_ms(iso_time: str) -> int | None:
    """A record's ISO time as MLflow's milliseconds since the epoch."""
    from datetime import datetime

    try:
        return int(datetime.fromisoformat(iso_time).timestamp() * 1000)
    except ValueError:
        return None


def run_name(overrides: Iterable[str]) -> str:
    return ",".join(overrides) or "default"


def job_run_tags(
    job_dir: Path, host: str, sweep_dir: Path | None, job_num: int | None, user: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The tags a job's run starts with (whoever logs it): the user's own (``+tags.stage=tested``, as given), then
    explaunch's, which win over a user's tag of the same name."""
    tags = {**(user or {}), "job_dir": str(job_dir), "status": "RUNNING", "host": host}
    if sweep_dir is not None:
        tags["sweep_dir"] = str(sweep_dir)
        tags["job_num"] = str(job_num)
    return tags


def end_leaked_fluent_run() -> None:
    """User code may have started a fluent MLflow run; in a reused worker it must not swallow the next job. MLflow
    is not imported for this: a job that never imported it has no such run."""
    mlflow = sys.modules.get("mlflow")
    if mlflow is not None and mlflow.active_run() is not None:
        mlflow.end_run(status="KILLED")


def start_system_metrics(run_id: str, tracking_uri: str, interval_s: float) -> Any:
    """MLflow's own system metrics monitor on the run, started (``tracking.system_metrics=true``); ``finish()``
    stops it (see :mod:`explaunch._compat`)."""
    return _compat.mlflow_system_metrics(run_id, tracking_uri, interval_s)
