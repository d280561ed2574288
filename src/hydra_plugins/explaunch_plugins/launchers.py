"""explaunch's submitit launchers (``hydra/launcher=submitit_slurm`` and ``submitit_local``).

Hydra's submitit launcher waits for a batch with ``[job.results()[0] for job in jobs]``: the first job that timed
out or died raises, and the whole sweep aborts while its other jobs may still run. These launchers submit the batch
the same way (one job array, bounded by ``array_parallelism``), then wait for every job, polling at ``poll_s``
(no busy-waiting), and return a failed ``JobReturn`` carrying submitit's error for a job that left no result, so the
sweeper records it (``timeout`` for SLURM's TIMEOUT) and goes on. When the sweep is asked to stop (Ctrl-C, SIGTERM),
jobs still waiting in the queue are cancelled (``scancel --state=PENDING``: never one that has started); a second
Ctrl-C cancels the running ones too.

A job of ``sharding.num_processes`` = N > 1 runs as N tasks (``tasks_per_node``): task 0 runs the Hydra job as usual
(callbacks, record, MLflow run) and the other tasks only their process of the torch.distributed group
(:func:`explaunch.experiments.sharded.task_worker`); the job's result is task 0's.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import logging
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides, setup_globals
from hydra_plugins.hydra_joblib_launcher.config import JobLibLauncherConf
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf, LocalQueueConf, SlurmQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher, SlurmLauncher
from omegaconf import II, OmegaConf, open_dict

from explaunch.config import spec
from explaunch.errors import ConfigError
from explaunch.launch import jobguard
from hydra_plugins.explaunch_plugins.local_launcher import ExplaunchLocalLauncherConf

log = logging.getLogger(__name__)
_EXECUTOR_INIT_KEYS = {"max_num_timeout"}  # submitit takes these when the executor is built, the rest after
_PARAM_SOURCES = {"sharding", "hardware", "experiment"}  # config groups the launcher presets take values from


class _WaitForAll:
    """Mixed into Hydra's submitit launchers: same submission, a wait that never gives up on the batch."""

    _EXECUTOR: str
    params: dict[str, Any]
    config: Any
    hydra_context: Any
    poll_s: float = 2.0

    def _take_own_params(self) -> None:
        self.poll_s = float(self.params.pop("poll_s", 2.0))

    def __call__(
        self,
        sweep_overrides: list[str],
        job_dir_key: str,
        job_num: int,
        job_id: str,
        singleton_state: dict[type, Singleton],
    ) -> JobReturn | None:
        """Runs in every task of the job: task 0 is the Hydra job, the others a process of its group."""
        import submitit

        if submitit.JobEnvironment().global_rank == 0:
            result: JobReturn = super().__call__(  # type: ignore[misc]
                sweep_overrides, job_dir_key, job_num, job_id, singleton_state
            )
            return result
        self._task_worker(sweep_overrides, job_dir_key, job_num, singleton_state)
        return None

    def _task_worker(
        self, sweep_overrides: list[str], job_dir_key: str, job_num: int, singleton_state: dict[type, Singleton]
    ) -> None:
        from explaunch.config import validate
        from explaunch.experiments.sharded import task_worker, uses_tasks

        Singleton.set_state(singleton_state)
        setup_globals()
        sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(sweep_overrides))
        with open_dict(sweep_config.hydra.job):
            sweep_config.hydra.job.num = job_num
        HydraConfig.instance().set_config(sweep_config)
        job_dir = Path(str(OmegaConf.select(sweep_config, job_dir_key))) / str(sweep_config.hydra.sweep.subdir)
        config = validate(sweep_config)
        group = uses_tasks(config)
        if group is None:  # a one-process job given several tasks (or launch=spawn): nothing for this task to do
            log.warning(
                "task %s of job %d has no process to run (sharding.launch=%s)", job_num, job_num, config.sharding.launch
            )
            return
        task_worker(config, job_dir, group)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Called in the job by submitit on SLURM's time-limit warning (USR2). Requeue only when asked for
        (``max_num_timeout`` > 0); otherwise let SLURM end the job, and the sweep records it ``timeout``."""
        if not self.params.get("max_num_timeout"):
            return None
        return super().checkpoint(*args, **kwargs)  # type: ignore[misc]

    def _executor(self, params: dict[str, Any]) -> Any:
        import submitit

        init = {"folder": params["submitit_folder"]}
        init.update({f"{self._EXECUTOR}_{k}": v for k, v in params.items() if k in _EXECUTOR_INIT_KEYS})
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init)
        generic = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(
            **{
                (k if k in generic else f"{self._EXECUTOR}_{k}"): v
                for k, v in params.items()
                if k not in _EXECUTOR_INIT_KEYS and k != "submitit_folder"
            }
        )
        return executor

    def _job_params(self, job_overrides: Sequence[Sequence[str]]) -> list[dict[str, Any]]:
        """Each job's launcher parameters. Hydra resolves ``hydra.launcher`` once, from the sweep's config: when
        jobs override what the parameters follow (``sharding``, ``hardware``, an ``experiment``, or
        ``hydra.launcher`` itself), each job's are resolved from its own config, so that ``sharding=none,ddp``
        gives the ddp jobs their tasks."""
        keys = {o.split("=", 1)[0].lstrip("+~") for overrides in job_overrides for o in overrides}
        if not any(k.split(".")[0] in _PARAM_SOURCES or k.startswith("hydra.launcher") for k in keys):
            return [self.params] * len(job_overrides)
        out = []
        for overrides in job_overrides:
            job_cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            launcher = OmegaConf.to_container(job_cfg.hydra.launcher, resolve=True)
            assert isinstance(launcher, dict)
            params = {str(k): v for k, v in launcher.items() if k in self.params}
            out.append({**self.params, **params, "submitit_folder": self.params["submitit_folder"]})
        return out

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        groups: dict[str, list[int]] = {}  # one job array per distinct set of launcher parameters
        job_params = self._job_params(job_overrides)
        for index, params in enumerate(job_params):
            groups.setdefault(json.dumps(params, sort_keys=True, default=str), []).append(index)
        jobs: list[Any] = [None] * len(job_overrides)
        for indices in groups.values():
            arguments = []
            for index in indices:
                num = initial_job_idx + index
                log.info("\t#%d : %s", num, " ".join(filter_overrides(job_overrides[index])))
                state = Singleton.get_state()
                arguments.append((list(job_overrides[index]), "hydra.sweep.dir", num, f"job_id_for_{num}", state))
            submitted = self._executor(job_params[indices[0]]).map_array(self, *zip(*arguments, strict=True))
            for index, job in zip(indices, submitted, strict=True):
                jobs[index] = job
            log.info(
                "submitted %d jobs to %s (%s)", len(submitted), self._EXECUTOR, ", ".join(j.job_id for j in submitted)
            )
        cancelled = self._wait(jobs)
        results = [
            self._result(job, overrides, job.job_id in cancelled)
            for job, overrides in zip(jobs, job_overrides, strict=True)
        ]
        for job in jobs:
            _forget_pickles(job)
        return results

    def _wait(self, jobs: list[Any]) -> set[str]:
        """Until every job is done or was cancelled here; returns the ids of those cancelled before they started."""
        cancelled: set[str] = set()
        asked = False
        try:
            while not all(job.done() or job.job_id in cancelled for job in jobs):
                if jobguard.stop_requested() and not asked:
                    asked = True
                    cancelled = self._cancel_queued([job for job in jobs if not job.done()])
                    if cancelled:
                        log.warning("cancelled %d jobs still waiting in the queue", len(cancelled))
                time.sleep(self.poll_s)
        except KeyboardInterrupt:
            for job in jobs:
                if not job.done():
                    job.cancel(check=False)
            log.warning("cancelled the batch's unfinished jobs")
            raise
        return cancelled

    def _cancel_queued(self, jobs: list[Any]) -> set[str]:
        """Cancels those of ``jobs`` still waiting to start; returns their ids. Local jobs never wait."""
        return set()

    @staticmethod
    def _result(job: Any, overrides: Sequence[str], cancelled: bool) -> JobReturn:
        if cancelled:  # never started: there is no result to wait for
            error = jobguard.interruption(
                f"SLURM job {job.job_id} cancelled in the queue when the sweep was interrupted"
            )
            return _failed(overrides, error)
        try:
            result: JobReturn = job.task(0).results()[0]  # task 0 ran the Hydra job; the others return None
            return result
        except Exception as ex:  # timed out, killed, node lost: the job left no result
            return _failed(overrides, ex)


def _forget_pickles(job: Any) -> None:
    """Remove a finished job's pickles from ``.submitit/``: what submitit sends the job (its overrides and Hydra's
    state, secrets included: the job needs them) and what it returned (a ``JobReturn`` holding the job's config).
    Once the sweep has its result neither is read again; the logs, redacted, stay. A job still queued or running
    (a sweep stopped by Ctrl-C) keeps them: SLURM may requeue it."""
    if not job.done():
        return
    paths = [job.paths.submitted_pickle] + [job.task(i).paths.result_pickle for i in range(job.num_tasks)]
    for path in paths:
        with contextlib.suppress(OSError):
            Path(path).unlink(missing_ok=True)


def _failed(overrides: Sequence[str], error: BaseException) -> JobReturn:
    """The ``JobReturn`` of a job that failed with ``error``, as Hydra's ``run_job`` makes one."""
    job_return = JobReturn(overrides=list(overrides), status=JobStatus.FAILED)
    job_return.return_value = error
    return job_return


class ExplaunchSlurmLauncher(_WaitForAll, SlurmLauncher):
    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._take_own_params()
        check_signal_delay("hydra.launcher", int(self.params["timeout_min"]), int(self.params["signal_delay_s"]))

    def _cancel_queued(self, jobs: list[Any]) -> set[str]:
        """``scancel --state=PENDING``: the controller itself cancels only a job that has not started, so a job that
        began a moment ago keeps running (submitit's ``job.state`` comes from ``sacct``, polled at most every
        10 min: it may still say PENDING long after a job started). Cancelled are the jobs the controller no longer
        has (or has as CANCELLED) and that left no result; a requeued job waiting to run again is one of them.
        Where ``squeue`` cannot answer, only the jobs that never began (no log) count."""
        ids = [job.job_id for job in jobs]
        if not ids:
            return set()
        scancel = subprocess.run(["scancel", "--state=PENDING", *ids], capture_output=True, text=True, check=False)
        if scancel.returncode != 0:  # e.g. one id SLURM has already purged: the others are still cancelled
            log.warning("scancel: %s", scancel.stderr.strip() or f"exit code {scancel.returncode}")
        queue = subprocess.run(  # all of this user's jobs: an id given with -j that SLURM has purged is an error
            ["squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%i %T"], capture_output=True, text=True, check=False
        )
        if queue.returncode != 0 and scancel.returncode != 0:
            log.warning("SLURM did not answer (%s): the queued jobs may still run", queue.stderr.strip())
            return set()
        states = dict(line.split(maxsplit=1) for line in queue.stdout.splitlines() if " " in line)
        cancelled = set()
        for job in jobs:
            task = job.task(0)
            if Path(task.paths.result_pickle).exists() or states.get(job.job_id, "CANCELLED") != "CANCELLED":
                continue
            if queue.returncode == 0 or not Path(task.paths.stdout).exists():
                cancelled.add(job.job_id)
        return cancelled


def check_signal_delay(key: str, timeout_min: int, signal_delay_s: int) -> None:
    limit_s = timeout_min * 60
    if signal_delay_s + 30 >= limit_s:  # SLURM checks limits every 30 s: the warning could come before Python runs
        raise ConfigError(
            f"{key}.signal_delay_s",
            signal_delay_s,
            f"must be below timeout_min*60 - 30 = {limit_s - 30} (timeout_min={timeout_min})",
        )


class ExplaunchLocalLauncher(_WaitForAll, LocalLauncher):
    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._take_own_params()


_CPUS_PER_TASK = "${explaunch.cpus_per_task:${sharding.num_processes},${sharding.launch},1}"
_TASKS_PER_NODE = "${explaunch.tasks_per_node:${sharding.num_processes},${sharding.launch}}"


@dataclass
class ExplaunchSlurmConf(SlurmQueueConf):
    """``hydra/launcher=submitit_slurm``: Hydra's submitit SLURM config with explaunch's launcher and defaults.

    Site settings come from the environment (EXPLAUNCH_SLURM_PARTITION, _ACCOUNT, _QOS, _CONSTRAINT) or from a
    file of your own, conf/hydra/launcher/mycluster.yaml with ``defaults: [submitit_slurm, _self_]``. CPUs per
    GPUs follow the ``hardware`` group; a job of ``sharding.num_processes`` N gets N tasks of ``cpus_per_task`` CPUs
    each (with ``sharding.launch=spawn``: one task of N CPUs, the job spawns its processes).
    """

    _target_: str = "hydra_plugins.explaunch_plugins.launchers.ExplaunchSlurmLauncher"
    partition: Optional[str] = "${oc.env:EXPLAUNCH_SLURM_PARTITION,null}"
    account: Optional[str] = "${oc.env:EXPLAUNCH_SLURM_ACCOUNT,null}"
    qos: Optional[str] = "${oc.env:EXPLAUNCH_SLURM_QOS,null}"
    constraint: Optional[str] = "${oc.env:EXPLAUNCH_SLURM_CONSTRAINT,null}"
    timeout_min: int = spec(60, min=1)
    signal_delay_s: int = spec(120, min=0, help="USR2 this long before the limit; + 30 < timeout_min * 60")
    cpus_per_task: Optional[int] = spec(_CPUS_PER_TASK, min=1)
    tasks_per_node: int = spec(_TASKS_PER_NODE, min=1)
    gpus_per_node: Optional[int] = spec(II("hardware.num_gpus"), min=0)
    mem_gb: Optional[int] = spec(4, min=0, help="0: all of a node's memory (SLURM's --mem=0)")
    nodes: int = spec(1, min=1)
    cpus_per_gpu: Optional[int] = spec(None, min=1)
    gpus_per_task: Optional[int] = spec(None, min=0)
    max_num_timeout: int = spec(0, min=0)
    array_parallelism: int = spec(64, min=1)
    poll_s: float = spec(2.0, min=0.01, help="how often the parent looks at its jobs")

    def check(self, key: str) -> None:
        if self.timeout_min is not None and self.signal_delay_s is not None:
            check_signal_delay(key, self.timeout_min, self.signal_delay_s)


@dataclass
class ExplaunchLocalConf(LocalQueueConf):
    """``hydra/launcher=submitit_local``: the same submission and waiting as local processes (no SLURM)."""

    _target_: str = "hydra_plugins.explaunch_plugins.launchers.ExplaunchLocalLauncher"
    timeout_min: int = spec(60, min=1)
    cpus_per_task: Optional[int] = spec(_CPUS_PER_TASK, min=1)
    tasks_per_node: int = spec(_TASKS_PER_NODE, min=1)
    gpus_per_node: Optional[int] = spec(II("hardware.num_gpus"), min=0)
    mem_gb: Optional[int] = spec(None, min=0)
    nodes: int = spec(1, min=1)
    poll_s: float = spec(1.0, min=0.01)


@dataclass
class BasicLauncherRules:
    """``hydra/launcher=basic`` takes no settings (checked by explaunch.launch.preflight)."""

    _target_: str = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"


@dataclass
class JoblibRules(JobLibLauncherConf):
    """The rules of Hydra's ``hydra/launcher=joblib`` settings (Hydra's config, unchanged, gives the values), checked
    by explaunch.launch.preflight before anything starts."""

    n_jobs: int = spec(-1, help="N workers; -1 every core, -2 all but one, ... (not 0)")
    backend: Optional[str] = spec(None, help="a joblib backend: loky, multiprocessing, threading, ...")
    prefer: str = spec("processes", choices=("processes", "threads"))
    require: Optional[str] = spec(None, choices=("sharedmem",))
    verbose: int = spec(0, min=0)
    timeout: Optional[float] = spec(None, help="> 0 seconds")
    batch_size: str = spec("auto", help="auto, or a number of jobs > 0")
    mmap_mode: str = spec("r", choices=("r+", "r", "w+", "c"))

    def check(self, key: str) -> None:
        if self.n_jobs == 0:
            raise ConfigError(f"{key}.n_jobs", 0, "must be N > 0 (workers), or -1 every core, -2 all but one, ...")
        if self.timeout is not None and not self.timeout > 0:
            raise ConfigError(f"{key}.timeout", self.timeout, "must be a number > 0 (seconds), or null")
        batch_size = str(self.batch_size)
        if self.batch_size is not None and batch_size != "auto" and not (batch_size.isdigit() and int(batch_size) > 0):
            raise ConfigError(f"{key}.batch_size", self.batch_size, "must be auto or an integer >= 1")
        if self.backend is not None:
            from joblib import parallel_config

            try:
                with parallel_config(backend=self.backend):  # joblib's own check of the name, undone on exit
                    pass
            except ValueError:
                allowed = "loky, threading, multiprocessing, sequential, or one joblib.register_parallel_backend added"
                raise ConfigError(f"{key}.backend", self.backend, f"allowed: {allowed}") from None


# hydra.launcher._target_ / hydra.sweeper._target_ -> the dataclass whose rules explaunch.launch.preflight checks
SETTINGS_SCHEMAS: dict[str, type] = {
    BasicLauncherRules._target_: BasicLauncherRules,
    JobLibLauncherConf._target_: JoblibRules,
    ExplaunchSlurmConf._target_: ExplaunchSlurmConf,
    ExplaunchLocalConf._target_: ExplaunchLocalConf,
    ExplaunchLocalLauncherConf._target_: ExplaunchLocalLauncherConf,
}


def register_launchers() -> None:
    """Replace Hydra's ``submitit_slurm`` / ``submitit_local`` entries by ours (called from our Hydra plugin module,
    after importing Hydra's, so that ours are the ones left in the ConfigStore)."""
    import hydra_plugins.hydra_submitit_launcher.config  # noqa: F401 - Hydra's entries first, then ours over them
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    store.store(group="hydra/launcher", name="submitit_slurm", node=ExplaunchSlurmConf, provider="explaunch")
    store.store(group="hydra/launcher", name="submitit_local", node=ExplaunchLocalConf, provider="explaunch")
    store.store(group="hydra/launcher", name="explaunch_local", node=ExplaunchLocalLauncherConf, provider="explaunch")
