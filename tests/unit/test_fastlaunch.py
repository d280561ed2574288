"""Warming joblib workers: only where joblib has worker processes."""

from __future__ import annotations

from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher

from explaunch import fastlaunch


def test_no_warm_up_when_joblib_runs_jobs_in_this_process() -> None:
    """n_jobs=1: joblib runs the jobs in the sweep's own process; a warm-up thread there would import MLflow
    concurrently with the main thread (seen: "partially initialized module 'mlflow'" in every job)."""
    assert fastlaunch.warm_workers(JoblibLauncher(n_jobs=1), 1, mlflow=True, energy=False) is None


def test_warm_up_starts_workers_for_a_pool() -> None:
    thread = fastlaunch.warm_workers(JoblibLauncher(n_jobs=2), 2, mlflow=False, energy=False)
    assert thread is not None
    thread.join(timeout=120)
    assert not thread.is_alive()
