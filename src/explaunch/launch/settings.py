"""What the sweep's modules share: ``hydra.sweeper.*`` as :class:`SweeperSettings`, a grid point as :class:`Job`, the
names of the files the sweep writes, and the exit codes (the sweep's modules: :mod:`explaunch.launch.sweeper`)."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field

from omegaconf import DictConfig, OmegaConf

from explaunch.sweepdir import records

ATTEMPTS_DIR = "attempts"
# Files a job writes; an earlier attempt's are moved to attempts/<k>/ before the job runs again in its folder.
ATTEMPT_FILES = (
    records.JOB_FILE,
    records.TRACEBACK_FILE,
    "resources.csv",
    "emissions.csv",
    "git.patch",
    "*.log",
    "stdout.txt",
    "stderr.txt",
    "artifacts",
)
EXIT_INTERRUPTED = 130
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})  # writes that no job can make succeed
STOP_FILE = ".stop"  # while a streaming launch runs: the sweep stops launching, queued jobs do not begin
# The logger of every module of the sweep: its lines name one logger, as when the sweep was one module.
SWEEP_LOG = "explaunch.launch.sweeper"


@dataclass(frozen=True)
class SweeperSettings:
    """``hydra.sweeper.*`` (see hydra_plugins/explaunch_plugins/config.py for what each means)."""

    max_batch_size: int | None = None
    max_retries: int = 0
    backoff_s: float = 1.0
    retry_on: tuple[str, ...] = ("OSError", "RuntimeError", "TimeoutError", "WorkerDied")
    oom_fallback: bool = True
    min_batch_size: int = 1
    rerun_failed: bool = True
    max_failure_rate: float = 0.8
    min_jobs_for_rate: int = 5
    job_timeout_s: float | None = None
    max_duration_h: float | None = None
    progress: bool = True
    dashboard: bool = False
    dashboard_port: int | None = None
    limits: dict[str, float] = field(default_factory=dict)  # the limits set (LimitsConf), poll_s included
    detach: bool = False
    order: str = "grid"
    order_seed: int | None = None
    cooldown_s: float = 0.0
    temperature_warn_c: float = 5.0
    budget: dict[str, float] = field(default_factory=dict)  # the budgets set (BudgetConf)
    stop_when: str | None = None

    @classmethod
    def from_config(cls, sweeper: DictConfig) -> SweeperSettings:
        values = {k: sweeper[k] for k in cls.__dataclass_fields__ if k in sweeper}
        if "retry_on" in values:
            values["retry_on"] = tuple(values["retry_on"])
        for name in ("limits", "budget"):  # only what is set: an empty dict means nothing to watch
            node = values.get(name)
            values[name] = {k: float(v) for k, v in (node or {}).items() if v is not None}
        if set(values["limits"]) <= {"poll_s"}:
            values["limits"] = {}
        return cls(**values)


def batch_size(settings: SweeperSettings, launcher: DictConfig) -> int:
    """How many jobs run at once: ``max_batch_size``, else what the launcher's config (``hydra.launcher``) allows."""
    if settings.max_batch_size:
        return settings.max_batch_size
    n_jobs = OmegaConf.select(launcher, "n_jobs", default=None)
    if n_jobs is not None:  # joblib: -1 is every core, -2 all but one, ...
        cores = os.cpu_count() or 1
        return max(1, int(n_jobs) if int(n_jobs) > 0 else cores + 1 + int(n_jobs))
    parallel = OmegaConf.select(launcher, "array_parallelism", default=None)  # submitit
    if parallel is not None:
        return max(1, int(parallel))
    return 1  # the basic launcher runs one job at a time anyway


@dataclass
class Job:
    """One point of the grid and what became of it."""

    index: int  # position in the grid
    grid_overrides: list[str]  # as the grid defines it; the ledger key is the hash of this config
    key: str
    cfg: DictConfig
    num: int = -1  # job number: its folder under the sweep dir
    overrides: list[str] = field(default_factory=list)  # as launched (differs after an OOM fallback)
    attempt: int = 0
    status: str | None = None  # the final outcome in this run (None: not run)
    record: records.JobRecord | None = None

    @property
    def batch_size(self) -> int | None:
        value = OmegaConf.select(self.cfg, "batching.batch_size", default=None)
        return int(value) if value is not None else None


def why(ex: OSError) -> str:
    """An OSError in a few words: ``No space left on device: /path``."""
    where = ex.filename if ex.filename is not None else ""
    return f"{ex.strerror or type(ex).__name__}{': ' + str(where) if where else ''}"
