from dataclasses import dataclass, field
from typing import Dict, List, Optional

from hydra.core.config_store import ConfigStore

from explaunch.config import spec


@dataclass
class LimitsConf:
    """``hydra.sweeper.limits.*``: while the machine is over one of these, no new local job starts (running jobs go
    on). All unset (the default): nothing is sampled."""

    memory_percent: Optional[float] = spec(None, min=1, max=100, help="used memory, % of the machine's")
    cpu_percent: Optional[float] = spec(None, min=1, max=100, help="CPU load over all cores, %")
    gpu_memory_percent: Optional[float] = spec(None, min=1, max=100, help="used memory of the busiest GPU, %")
    disk_free_gb: Optional[float] = spec(None, min=0, help="free space under the sweep folder, GB")
    poll_s: float = spec(1.0, min=0.1, max=60, help="how often the machine is read while held")


@dataclass
class BudgetConf:
    """``hydra.sweeper.budget.*``: the sweep stops launching before a budget would be passed (projected from the jobs
    done so far) and ends with ``stop_reason=budget``. Unset: no budget."""

    energy_kwh: Optional[float] = None  # > 0 (see check)
    emissions_kg: Optional[float] = None
    gpu_hours: Optional[float] = None
    wall_hours: Optional[float] = None

    def check(self, key: str) -> None:
        from explaunch.errors import ConfigError

        for name in ("energy_kwh", "emissions_kg", "gpu_hours", "wall_hours"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"{key}.{name}", value, "must be a number > 0, or null for no budget")


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
    # Hold new local launches while the machine is over a limit (see LimitsConf).
    limits: LimitsConf = field(default_factory=LimitsConf)
    # Submit and return: the sweep's controller goes on in the background (a SLURM job on submitit_slurm).
    detach: bool = False
    # The order jobs start in: grid (as expanded), shuffle (seeded by order_seed, drawn and recorded when null),
    # interleave (each group's jobs spread over the sweep, so that no group runs all first or all last).
    order: str = spec("grid", choices=("grid", "shuffle", "interleave"))
    order_seed: Optional[int] = spec(None, min=0)
    # Seconds between two jobs on the same host (or GPU): a job does not start on a machine still warm from the last.
    cooldown_s: float = spec(0.0, min=0.0)
    # On GPUs: warn when a job starts this many degrees C away from the sweep's first job.
    temperature_warn_c: float = spec(5.0, min=0.0)
    budget: BudgetConf = field(default_factory=BudgetConf)
    # Stop at a target, in the rule syntax of explaunch validate: "accuracy >= 0.9 and demographic_parity_difference
    # <= 0.05". Once a completed job meets it, no new job starts.
    stop_when: Optional[str] = None

    def check(self, key: str) -> None:
        from explaunch.errors import ConfigError

        for name in ("job_timeout_s", "max_duration_h"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"{key}.{name}", value, "must be a number > 0, or null for no limit")
        if self.stop_when is not None:
            from explaunch.launch import stop_rule

            stop_rule.parse(self.stop_when, f"{key}.stop_when" if key else "stop_when")


ConfigStore.instance().store(group="hydra/sweeper", name="explaunch", node=ExplaunchSweeperConf, provider="explaunch")


def _register_launchers() -> None:
    from hydra_plugins.explaunch_plugins.launchers import register_launchers

    register_launchers()


_register_launchers()
