"""Launching jobs from the configs the sweeper has already composed.

Hydra's basic and joblib launchers compose every job again from its overrides (``load_sweep_config``, about 0.2 s a
job here, as much as a short job's whole recording). explaunch's sweeper composed and validated every job while
planning, sharing one composition among jobs that differ only in plain values (:mod:`explaunch.composition`); for
these two launchers it hands the composed configs over and runs them as those launchers do (same job ids, numbers,
folders, logging, joblib settings) with one difference: jobs stream through joblib's pool, each starting as soon as
a worker is free, where Hydra's launcher runs a list of jobs and returns when the last one ends — so the sweeper's
batches each waited for their slowest job. Any other launcher (submitit) gets the overrides as usual.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from omegaconf import DictConfig, open_dict

log = logging.getLogger(__name__)


def supports(launcher: Any) -> bool:
    """Whether ``launcher`` is one whose launch this module reproduces (exactly those classes, not subclasses)."""
    kind = f"{type(launcher).__module__}.{type(launcher).__qualname__}"
    return kind in {
        "hydra._internal.core_plugins.basic_launcher.BasicLauncher",
        "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher",
    }


def stream(launcher: Any, tasks: Iterator[tuple[int, DictConfig, list[str]]]) -> Iterator[tuple[int, JobReturn]]:
    """Run ``(job number, composed config, overrides)`` tasks as those launchers would, yielding ``(job number,
    JobReturn)`` as each job ends. joblib takes the next task when a worker is free (``pre_dispatch=n_jobs``, results
    unordered), so no job waits for another one; ``tasks`` is read lazily, and when it ends no further job starts."""
    setup_globals()
    configure_log(launcher.config.hydra.hydra_logging, launcher.config.hydra.verbose)
    Path(str(launcher.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
    context, task_function = launcher.hydra_context, launcher.task_function
    if type(launcher).__name__ == "BasicLauncher":
        for num, config, overrides in tasks:
            log.info("Launching job #%d locally: %s", num, " ".join(filter_overrides(overrides)))
            yield num, run_composed(num, config, context, task_function, None)
        return
    from joblib import Parallel, delayed

    settings = {**_joblib_settings(launcher), "return_as": "generator_unordered", "pre_dispatch": "n_jobs"}
    log.info("Joblib.Parallel(%s) is launching the jobs as workers free up", _joblib_line(settings))
    state = (uuid.uuid4().hex, Singleton.get_state())

    def calls() -> Iterator[Any]:
        for num, config, overrides in tasks:
            log.info("\t#%d : %s", num, " ".join(filter_overrides(overrides)))
            yield delayed(_numbered)(num, config, context, task_function, state)

    yield from Parallel(**settings)(calls())


def _numbered(
    num: int, config: DictConfig, hydra_context: Any, task_function: Any, state: tuple[str, dict[Any, Any]]
) -> tuple[int, JobReturn]:
    job_return = run_composed(num, config, hydra_context, task_function, state)
    job_return.cfg = job_return.hydra_cfg = None  # the sweep reads records, not these (~100 KB to send back)
    return num, job_return


def _joblib_line(settings: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in settings.items())


def warm_workers(launcher: Any, workers: int, *, mlflow: bool, energy: bool) -> threading.Thread | None:
    """joblib: start the worker processes and their one-time set-up (imports; the energy meter sidecar and its
    hardware probe, about 2 s) in a background thread. The launches that follow reuse these workers (loky keeps an
    executor with the same settings)."""
    if type(launcher).__name__ != "JoblibLauncher":
        return None
    from joblib import Parallel, delayed, effective_n_jobs

    settings = _joblib_settings(launcher)
    if effective_n_jobs(settings.get("n_jobs", 1)) < 2:
        # joblib then runs jobs in this process: warming up here would import MLflow in this thread while the main
        # thread imports it too, which leaves a partially initialised module behind
        return None

    def start() -> None:
        try:
            Parallel(**settings)(delayed(warm_up)(mlflow, energy) for _ in range(workers))
        except Exception as ex:  # only a head start: the jobs start their workers anyway
            log.debug("warming the joblib workers failed: %s: %s", type(ex).__name__, ex)

    thread = threading.Thread(target=start, name="explaunch-warm-workers", daemon=True)
    thread.start()
    return thread


def warm_up(with_mlflow: bool, energy: bool) -> None:
    """In a worker: what every job's recording needs once per process."""
    import importlib

    for module in ("explaunch.recording", "explaunch.task", *(["mlflow.tracking"] if with_mlflow else [])):
        importlib.import_module(module)
    if energy:
        from explaunch.measure.energy import EnergyTracker

        with EnergyTracker():  # starts this worker's energy meter sidecar and waits for its hardware probe
            pass


def _joblib_settings(launcher: Any) -> dict[str, Any]:
    from hydra_plugins.hydra_joblib_launcher._core import process_joblib_cfg

    joblib_cfg = dict(launcher.joblib)
    joblib_cfg["backend"] = "loky"  # as Hydra's joblib launcher: its threading backend does not work with Hydra
    process_joblib_cfg(joblib_cfg)
    return joblib_cfg


_applied_state: str | None = None  # in a worker: the launch whose Hydra state this process has


def run_composed(
    num: int, config: DictConfig, hydra_context: Any, task_function: Any, state: tuple[str, dict[Any, Any]] | None
) -> JobReturn:
    """One job from its composed config (in the sweep's process, or in a joblib worker).

    A worker takes Hydra's global state from the parent once per launch, not per job as Hydra's joblib launcher
    does: setting it makes Hydra scan every plugin again (~30 ms a job)."""
    global _applied_state
    if state is not None and state[0] != _applied_state:  # a worker: Hydra's global state as the parent has it
        setup_globals()
        Singleton.set_state(state[1])
        _applied_state = state[0]
    with open_dict(config):
        config.hydra.job.id = f"{config.hydra.job.name}_{num}" if state is not None else num
        config.hydra.job.num = num
    return run_job(  # it sets HydraConfig from ``config`` first thing
        hydra_context=hydra_context,
        task_function=task_function,
        config=config,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )
