"""Hydra callbacks: thin, they call the record modules and never fail a job themselves.

Registered in ``conf/hydra/explaunch.yaml``. ``on_job_*`` run inside the worker process, ``on_multirun_*`` in the
parent. A worker may be reused for several jobs (joblib/loky), so every job starts from freshly reset state.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from explaunch import records
from explaunch.errors import ConfigError

log = logging.getLogger(__name__)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _task_config(config: DictConfig) -> DictConfig:
    return OmegaConf.masked_copy(config, [str(k) for k in config if k != "hydra"])


def _resolved(config: DictConfig) -> dict[str, Any]:
    """The job's config with interpolations resolved; unresolved where resolution fails (the job failed then)."""
    try:
        data = OmegaConf.to_container(_task_config(config), resolve=True)
    except Exception:  # an invalid config is still recorded as given
        data = OmegaConf.to_container(_task_config(config), resolve=False)
    assert isinstance(data, dict)
    return {str(k): v for k, v in data.items()}


def _config_hash(config: DictConfig) -> str | None:
    from explaunch.config import config_hash, validate

    try:
        return config_hash(validate(config))
    except ConfigError:
        return None


def _error(job_dir: Path, job_return: JobReturn) -> records.JobError:
    exc = job_return._return_value  # Hydra keeps the job's exception here; .return_value would re-raise it
    if not isinstance(exc, BaseException):
        return records.JobError(type="UnknownError", message=repr(exc))
    path = job_dir / records.TRACEBACK_FILE
    records.write_text_atomic(path, "".join(traceback.format_exception(exc)))
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return records.JobError(type=type(exc).__name__, message=message, traceback_file=path.name)


class JobRecordCallback(Callback):
    """Writes ``job.json`` for every job (completed or failed) and ``sweep.json`` at the end of a sweep."""

    def __init__(self) -> None:
        self._start_time = ""
        self._t0 = 0.0

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._start_time, self._t0 = _now(), time.perf_counter()

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        job_dir = Path(HydraConfig.get().runtime.output_dir)
        hydra_job = HydraConfig.get().job
        completed = job_return.status == JobStatus.COMPLETED
        result = job_return.return_value if completed else {}
        record = records.JobRecord(
            status=records.COMPLETED if completed else records.FAILED,
            overrides=list(job_return.overrides or []),
            config=_resolved(config),
            config_hash=_config_hash(config),
            start_time=self._start_time or _now(),
            end_time=_now(),
            duration_s=time.perf_counter() - self._t0 if self._t0 else 0.0,
            job_num=hydra_job.num if HydraConfig.get().mode == RunMode.MULTIRUN else None,
            metrics=dict(result.get("metrics", {})) if isinstance(result, dict) else {},
            info={"host": socket.gethostname(), "pid": os.getpid(), **(result.get("info", {}) if result else {})},
            error=None if completed else _error(job_dir, job_return),
        )
        path = records.write_job_record(job_dir, record)
        log.info("job %s: %s (%.1f s) -> %s", record.job_num, record.status, record.duration_s, path)
        self._start_time, self._t0 = "", 0.0

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = records.write_sweep_record(Path(config.hydra.sweep.dir))
        log.info("sweep: %s -> %s", sweep.counts, Path(config.hydra.sweep.dir) / records.SWEEP_FILE)
