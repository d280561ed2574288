"""explaunch's submitit launchers (``hydra/launcher=submitit_slurm`` and ``submitit_local``).

Hydra's submitit launcher waits for a batch with ``[job.results()[0] for job in jobs]``: the first job that timed
out or died raises, and the whole sweep aborts while its other jobs may still run. These launchers submit the batch
the same way (one job array, bounded by ``array_parallelism``), then wait for every job, polling at ``poll_s``
(no busy-waiting), and return a failed ``JobReturn`` carrying submitit's error for a job that left no result, so the
sweeper records it (``timeout`` for SLURM's TIMEOUT) and goes on. When the sweep is asked to stop (Ctrl-C, SIGTERM),
jobs still waiting in the queue are cancelled (``scancel``); a second Ctrl-C cancels the running ones too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf, LocalQueueConf, SlurmQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher, SlurmLauncher
from omegaconf import II, OmegaConf

from explaunch import jobguard
from explaunch.errors import ConfigError, JobInterrupted

log = logging.getLogger(__name__)
_EXECUTOR_INIT_KEYS = {"max_num_timeout"}  # submitit takes these when the executor is built, the rest after


class _WaitForAll:
    """Mixed into Hydra's submitit launchers: same submission, a wait that never gives up on the batch."""

    _EXECUTOR: str
    params: dict[str, Any]
    config: Any
    poll_s: float = 2.0

    def _take_own_params(self) -> None:
        self.poll_s = float(self.params.pop("poll_s", 2.0))

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Called in the job by submitit on SLURM's time-limit warning (USR2). Requeue only when asked for
        (``max_num_timeout`` > 0); otherwise let SLURM end the job, and the sweep records it ``timeout``."""
        if not self.params.get("max_num_timeout"):
            return None
        return super().checkpoint(*args, **kwargs)  # type: ignore[misc]

    def _executor(self) -> Any:
        import submitit

        init = {"folder": self.params["submitit_folder"]}
        init.update({f"{self._EXECUTOR}_{k}": v for k, v in self.params.items() if k in _EXECUTOR_INIT_KEYS})
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init)
        generic = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(
            **{
                (k if k in generic else f"{self._EXECUTOR}_{k}"): v
                for k, v in self.params.items()
                if k not in _EXECUTOR_INIT_KEYS and k != "submitit_folder"
            }
        )
        return executor

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        arguments = []
        for offset, overrides in enumerate(job_overrides):
            num = initial_job_idx + offset
            log.info("\t#%d : %s", num, " ".join(filter_overrides(overrides)))
            arguments.append((list(overrides), "hydra.sweep.dir", num, f"job_id_for_{num}", Singleton.get_state()))
        jobs = self._executor().map_array(self, *zip(*arguments, strict=True))
        log.info("submitted %d jobs to %s (%s)", len(jobs), self._EXECUTOR, ", ".join(j.job_id for j in jobs))
        cancelled = self._wait(jobs)
        return [
            self._result(job, overrides, job.job_id in cancelled)
            for job, overrides in zip(jobs, job_overrides, strict=True)
        ]

    def _wait(self, jobs: list[Any]) -> set[str]:
        """Until every job is done or was cancelled here; returns the ids of those cancelled before they started."""
        cancelled: set[str] = set()
        try:
            while not all(job.done() or job.job_id in cancelled for job in jobs):
                if jobguard.stop_requested() and not cancelled:
                    waiting = [job for job in jobs if not job.done() and job.state in ("PENDING", "REQUEUED")]
                    for job in waiting:
                        job.cancel(check=False)
                        cancelled.add(job.job_id)
                    if waiting:
                        log.warning("cancelled %d jobs still waiting in the queue", len(waiting))
                time.sleep(self.poll_s)
        except KeyboardInterrupt:
            for job in jobs:
                if not job.done():
                    job.cancel(check=False)
            log.warning("cancelled the batch's unfinished jobs")
            raise
        return cancelled

    @staticmethod
    def _result(job: Any, overrides: Sequence[str], cancelled: bool) -> JobReturn:
        if cancelled:  # never started: there is no result to wait for
            error = JobInterrupted(f"SLURM job {job.job_id} cancelled in the queue when the sweep was interrupted")
            return JobReturn(overrides=list(overrides), status=JobStatus.FAILED, _return_value=error)
        try:
            result: JobReturn = job.results()[0]
            return result
        except Exception as ex:  # timed out, killed, node lost: the job left no result
            return JobReturn(overrides=list(overrides), status=JobStatus.FAILED, _return_value=ex)


class ExplaunchSlurmLauncher(_WaitForAll, SlurmLauncher):
    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._take_own_params()
        limit_s, delay_s = int(self.params["timeout_min"]) * 60, int(self.params["signal_delay_s"])
        if delay_s + 30 >= limit_s:  # SLURM checks limits every 30 s: the warning could come before Python runs
            raise ConfigError(
                "hydra.launcher.signal_delay_s",
                delay_s,
                f"must be below timeout_min*60 - 30 = {limit_s - 30} (timeout_min={self.params['timeout_min']})",
            )


class ExplaunchLocalLauncher(_WaitForAll, LocalLauncher):
    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._take_own_params()


@dataclass
class ExplaunchSlurmConf(SlurmQueueConf):
    """``hydra/launcher=submitit_slurm``: Hydra's submitit SLURM config with explaunch's launcher and defaults.

    Site settings come from the environment (EXPLAUNCH_SLURM_PARTITION, _ACCOUNT, _QOS, _CONSTRAINT) or from a
    file of your own, conf/hydra/launcher/mycluster.yaml with ``defaults: [submitit_slurm, _self_]``. CPUs per
    task and GPUs follow the ``sharding`` and ``hardware`` groups (a ddp job starts its processes in its one task).
    """

    _target_: str = "hydra_plugins.explaunch_plugins.launchers.ExplaunchSlurmLauncher"
    partition: Optional[str] = "${oc.env:EXPLAUNCH_SLURM_PARTITION,null}"
    account: Optional[str] = "${oc.env:EXPLAUNCH_SLURM_ACCOUNT,null}"
    qos: Optional[str] = "${oc.env:EXPLAUNCH_SLURM_QOS,null}"
    constraint: Optional[str] = "${oc.env:EXPLAUNCH_SLURM_CONSTRAINT,null}"
    timeout_min: int = 60
    signal_delay_s: int = 120  # USR2 this long before the limit; signal_delay_s + 30 < timeout_min * 60
    cpus_per_task: Optional[int] = II("sharding.num_processes")  # a ddp job starts its processes in its one task
    tasks_per_node: int = 1
    gpus_per_node: Optional[int] = II("hardware.num_gpus")
    mem_gb: Optional[int] = 4
    array_parallelism: int = 64
    poll_s: float = 2.0  # how often the parent looks at its jobs


@dataclass
class ExplaunchLocalConf(LocalQueueConf):
    """``hydra/launcher=submitit_local``: the same submission and waiting as local processes (no SLURM)."""

    _target_: str = "hydra_plugins.explaunch_plugins.launchers.ExplaunchLocalLauncher"
    cpus_per_task: Optional[int] = II("sharding.num_processes")
    tasks_per_node: int = 1
    gpus_per_node: Optional[int] = II("hardware.num_gpus")
    poll_s: float = 1.0


def register_launchers() -> None:
    """Replace Hydra's ``submitit_slurm`` / ``submitit_local`` entries by ours (called from our Hydra plugin module,
    after importing Hydra's, so that ours are the ones left in the ConfigStore)."""
    import hydra_plugins.hydra_submitit_launcher.config  # noqa: F401 - Hydra's entries first, then ours over them
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    store.store(group="hydra/launcher", name="submitit_slurm", node=ExplaunchSlurmConf, provider="explaunch")
    store.store(group="hydra/launcher", name="submitit_local", node=ExplaunchLocalConf, provider="explaunch")
