from dataclasses import dataclass, field
from typing import Dict, List, Optional

from hydra.core.config_store import ConfigStore

from explaunch.config import spec


@dataclass
class ExplaunchSweeperConf:
    """``hydra/sweeper=explaunch`` (the default in conf/config.yaml). Override any field: hydra.sweeper.max_retries=2

    The ``spec`` rules are checked before anything starts (explaunch.launch.preflight), as those of the job's config."""

    _target_: str = "hydra_plugins.explaunch_plugins.sweeper.ExplaunchSweeper"
    # The grid in config, as for Hydra's basic sweeper: {key: "a,b,c"}; the command line wins for the same key.
    params: Optional[Dict[str, str]] = None
    # Jobs handed to the launcher at once; null: its parallelism (joblib n_jobs, submitit array_parallelism, basic 1).
    max_batch_size: Optional[int] = spec(None, min=1)
    # Retries of a job whose error may pass (retry_on, matched against the error type and its base classes),
    # waiting backoff_s * 2**(attempt-1). A ConfigError or an interrupted job is never retried.
    max_retries: int = spec(0, min=0)
    backoff_s: float = spec(1.0, min=0.0)
    retry_on: List[str] = field(default_factory=lambda: ["OSError", "RuntimeError", "TimeoutError", "WorkerDied"])
    # Out of memory (torch's OutOfMemoryError, MemoryError, "out of memory"): retry with half the batch.
    oom_fallback: bool = True
    min_batch_size: int = spec(1, min=1)
    # Re-running into the same sweep folder skips completed jobs; failed ones run again unless this is false.
    rerun_failed: bool = True
    # Stop launching once failed/finished passes this, after at least min_jobs_for_rate finished jobs.
    max_failure_rate: float = spec(0.8, min=0.0, max=1.0)
    min_jobs_for_rate: int = spec(5, min=1)
    # A job past job_timeout_s is ended and recorded `timeout`; no job starts after max_duration_h.
    job_timeout_s: Optional[float] = None  # > 0 (see check)
    max_duration_h: Optional[float] = None  # > 0
    # A live progress line on a terminal (plain log lines otherwise).
    progress: bool = True
    # The live web dashboard (explaunch dashboard) served on 127.0.0.1 while the sweep runs; its address is printed.
    dashboard: bool = False
    dashboard_port: Optional[int] = spec(None, min=1, max=65535, help="null: a free port")

    def check(self, key: str) -> None:
        from explaunch.errors import ConfigError

        for name in ("job_timeout_s", "max_duration_h"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"{key}.{name}", value, "must be a number > 0, or null for no limit")


ConfigStore.instance().store(group="hydra/sweeper", name="explaunch", node=ExplaunchSweeperConf, provider="explaunch")


def _register_launchers() -> None:
    from hydra_plugins.explaunch_plugins.launchers import register_launchers

    register_launchers()


_register_launchers()
