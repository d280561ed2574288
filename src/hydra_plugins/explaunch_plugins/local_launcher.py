"""explaunch's local launcher, ``hydra/launcher=explaunch_local`` (the default of explaunch's app for ``-m``).

Jobs run on this machine, in warm joblib (loky) worker processes, with joblib's settings (``n_jobs`` workers;
``n_jobs`` resolving to 1: in this process, one after another, as Hydra's basic launcher runs them). Each job starts
as soon as a worker is free: no job waits for another one, where Hydra's joblib launcher runs a list of jobs and
returns when the last one ends. What every job shares (Hydra's context, the task function, Hydra's state) goes to
the workers once, not with every job (:mod:`explaunch.launch.fastlaunch`).

Like any Hydra launcher it runs the jobs a sweeper hands it (:meth:`ExplaunchLocalLauncher.launch`: Hydra's basic
sweeper, any other), composing each with Hydra's config loader. explaunch's sweeper, which composed and validated
every job while planning, streams its composed jobs instead (:meth:`ExplaunchLocalLauncher.stream`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from explaunch.config import spec
from explaunch.errors import ConfigError

if TYPE_CHECKING:
    from explaunch.launch.fastlaunch import Gate, Task


class ExplaunchLocalLauncher(Launcher):
    def __init__(self, **settings: Any) -> None:
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None
        self.joblib = settings  # joblib.Parallel's settings (the attribute's name in Hydra's joblib launcher)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.task_function = task_function
        self.hydra_context = hydra_context

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        """Run these jobs, numbered from ``initial_job_idx``; return their ``JobReturn`` in job order. Each job is
        composed with Hydra's config loader as a worker frees up for it; a composition error ends the launch."""
        from explaunch.launch.fastlaunch import Gate, Task

        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        config, loader = self.config, self.hydra_context.config_loader
        jobs = [list(overrides) for overrides in job_overrides]

        def tasks() -> Iterator[Task]:
            for index, overrides in enumerate(jobs):
                yield Task(initial_job_idx + index, loader.load_sweep_config(config, list(overrides)), overrides)

        returned = dict(self.stream(tasks(), Gate()))
        out: list[JobReturn] = []
        for num in range(initial_job_idx, initial_job_idx + len(jobs)):
            job_return = returned[num]
            assert job_return is not None  # an open gate turns no job away
            out.append(job_return)
        return out

    def stream(self, tasks: Iterator[Task], gate: Gate) -> Iterator[tuple[int, JobReturn | None]]:
        """Run composed jobs as workers free up (``tasks`` is read lazily), yielding ``(job number, JobReturn)`` as
        each ends, or ``(job number, None)`` for a job that did not begin because ``gate`` closed
        (:func:`explaunch.launch.fastlaunch.stream`)."""
        from explaunch.launch import fastlaunch

        return fastlaunch.stream(self, tasks, gate)


@dataclass
class ExplaunchLocalLauncherConf:
    """``hydra/launcher=explaunch_local``: joblib.Parallel's settings, as Hydra's joblib launcher takes them (its
    ``JobLibLauncherConf``), checked before anything starts (explaunch.launch.preflight)."""

    _target_: str = "hydra_plugins.explaunch_plugins.local_launcher.ExplaunchLocalLauncher"
    n_jobs: int = spec(-1, help="N workers; -1 every core, -2 all but one, ... (not 0); 1: in this process")
    backend: str | None = spec(None, choices=("loky",), help="null or loky: the jobs run in loky's processes")
    prefer: str = spec("processes", choices=("processes", "threads"))
    require: str | None = spec(None, help="null: the jobs run in processes, which share no memory")
    verbose: int = spec(0, min=0)
    timeout: float | None = spec(None, help="> 0 seconds")
    pre_dispatch: str = spec("2*n_jobs", help="joblib's; jobs stream with one waiting per worker (2*n_jobs)")
    batch_size: str = spec("auto", help="auto, or a number of jobs > 0")
    temp_folder: str | None = None
    max_nbytes: str | None = None
    mmap_mode: str = spec("r", choices=("r+", "r", "w+", "c"))

    def check(self, key: str) -> None:
        if self.n_jobs == 0:
            raise ConfigError(f"{key}.n_jobs", 0, "must be N > 0 (workers), or -1 every core, -2 all but one, ...")
        if self.require is not None:
            raise ConfigError(f"{key}.require", self.require, "must be null: the jobs run in separate processes")
        if self.timeout is not None and not self.timeout > 0:
            raise ConfigError(f"{key}.timeout", self.timeout, "must be a number > 0 (seconds), or null")
        batch_size = str(self.batch_size)
        if self.batch_size is not None and batch_size != "auto" and not (batch_size.isdigit() and int(batch_size) > 0):
            raise ConfigError(f"{key}.batch_size", self.batch_size, "must be auto or an integer >= 1")
