"""explaunch.launch.fastlaunch: warming joblib workers (only where joblib has worker processes); the gate a job passes
as it begins."""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher
from omegaconf import OmegaConf

from explaunch.launch import fastlaunch


def test_no_warm_up_when_joblib_runs_jobs_in_this_process() -> None:
    """n_jobs=1: joblib runs the jobs in the sweep's own process; a warm-up thread there would import MLflow
    concurrently with the main thread (seen: "partially initialized module 'mlflow'" in every job)."""
    assert fastlaunch.warm_workers(JoblibLauncher(n_jobs=1), 1, mlflow=True, energy=False, experiments=[]) is None


def test_warm_up_starts_workers_for_a_pool() -> None:
    thread = fastlaunch.warm_workers(JoblibLauncher(n_jobs=2), 2, mlflow=False, energy=False, experiments=["probe"])
    assert thread is not None
    thread.join(timeout=120)
    assert not thread.is_alive()


def test_a_gate_closes_on_the_stop_file_or_the_deadline(tmp_path: Path) -> None:
    stop = tmp_path / ".stop"
    assert not fastlaunch.Gate(str(stop)).closed()
    assert fastlaunch.Gate(str(stop), deadline=time.time() - 1).closed()
    stop.touch()
    assert fastlaunch.Gate(str(stop)).closed()


def test_a_gate_caps_the_job_time_limit_with_what_is_left_of_the_sweep(tmp_path: Path) -> None:
    """A job may wait in a worker's queue: its limit is set as it begins, not when it was handed out."""
    config = OmegaConf.create({"hydra": {"sweeper": {"job_timeout_s": 600.0}}})
    fastlaunch.Gate(str(tmp_path / ".stop"), deadline=time.time() + 30).cap_timeout(config)
    assert 25 <= config.hydra.sweeper.job_timeout_s <= 30
    config.hydra.sweeper.job_timeout_s = 10.0
    fastlaunch.Gate(str(tmp_path / ".stop"), deadline=time.time() + 30).cap_timeout(config)
    assert config.hydra.sweeper.job_timeout_s == 10.0
    config.hydra.sweeper.job_timeout_s = None
    fastlaunch.Gate(str(tmp_path / ".stop"), deadline=time.time() - 5).cap_timeout(config)
    assert config.hydra.sweeper.job_timeout_s == 1.0  # past the deadline: the shortest limit, never zero
    fastlaunch.Gate(str(tmp_path / ".stop")).cap_timeout(config)  # no sweep limit: unchanged
    assert config.hydra.sweeper.job_timeout_s == 1.0


def test_a_job_behind_a_closed_gate_does_not_begin(tmp_path: Path) -> None:
    (tmp_path / ".stop").touch()
    config = OmegaConf.create({"hydra": {"job": {"name": "main"}, "sweep": {"dir": str(tmp_path / "sweep")}}})
    task = fastlaunch.Task(0, config, ["seed=0"])
    ran: list[object] = []
    result = fastlaunch.run_composed(task, None, ran.append, fastlaunch.Gate(str(tmp_path / ".stop")), job_id="0")
    assert result is None and ran == [] and not (tmp_path / "sweep").exists()


_KEPT: list[bytes] = []


def _hold_a_jobs_memory(megabytes: int) -> int:
    """A job's lasting footprint in its worker (a model's modules, allocator caches), past loky's 1 s check delay."""
    time.sleep(1.2)
    _KEPT.append(b"\1" * (megabytes << 20))
    return os.getpid()


def _pid() -> int:
    return os.getpid()


def _worker_pids(first_call: Callable[[], object]) -> list[int]:
    from joblib.externals.loky import get_reusable_executor

    executor = get_reusable_executor(max_workers=1, reuse=False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # loky's, in its manager thread; the pids tell the story
            executor.submit(first_call).result()
            futures = [executor.submit(_hold_a_jobs_memory, 350), executor.submit(_pid), executor.submit(_pid)]
            return [f.result(timeout=60) for f in futures]
    finally:
        executor.shutdown(wait=True, kill_workers=True)


def test_a_worker_holding_a_jobs_memory_is_not_ended_as_leaking() -> None:
    """The cause of joblib's "A worker stopped while some jobs were given to the executor" in the demo: loky ends a
    worker that holds 300 MB more than after its first call (our warm-up). Without the fix the worker is replaced."""
    replaced = _worker_pids(_pid)
    assert len(set(replaced)) == 2  # the mechanism, as loky has it
    kept = _worker_pids(fastlaunch.keep_worker_with_job_sized_memory)
    assert len(set(kept)) == 1
