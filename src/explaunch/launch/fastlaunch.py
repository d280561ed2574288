"""Launching jobs from the configs the sweeper has already composed.

Jobs stream to warm workers here for explaunch's own launcher, ``hydra/launcher=explaunch_local``
(:class:`hydra_plugins.explaunch_plugins.local_launcher.ExplaunchLocalLauncher`, the default of explaunch's app for
``-m``): its public ``launch`` composes each job with Hydra's config loader and streams them here, its ``stream``
takes the jobs explaunch's sweeper composed.

Hydra's launchers compose every job again from its overrides (``load_sweep_config``, about 0.2 s a job here, as much
as a short job's whole recording). explaunch's sweeper composed and validated every job while planning, sharing one
composition among jobs that differ only in plain values (:mod:`explaunch.launch.composition`); explaunch's launcher
takes the composed configs and runs them as Hydra's joblib launcher would (job ids, numbers, folders, logging,
joblib settings, the same ``JobReturn``; each job run by :func:`explaunch.job.jobrun.run_job`, Hydra's ``run_job``
with fewer copies of the config) with one difference: jobs stream through joblib's pool, each starting as soon as a
worker is free, where Hydra's joblib launcher runs a list of jobs and returns when the last one ends. Every other
launcher, Hydra's basic and joblib launchers among them, gets the overrides through its own public ``launch``.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import math
import os
import pickle
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, filter_overrides, setup_globals
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from explaunch.job import jobrun

log = logging.getLogger(__name__)


BASIC = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
JOBLIB = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
LOCAL = "hydra_plugins.explaunch_plugins.local_launcher.ExplaunchLocalLauncher"  # hydra/launcher=explaunch_local
WORKER_LAUNCHERS = frozenset({JOBLIB, LOCAL})  # joblib.Parallel's settings in ``launcher.joblib``; loky's workers


def kind(launcher: Any) -> str:
    """The launcher's class, by its full name (exactly that class: a subclass is another launcher)."""
    return f"{type(launcher).__module__}.{type(launcher).__qualname__}"


def supports(launcher: Any) -> bool:
    """Whether ``launcher`` streams composed jobs: explaunch's own (exactly that class, not a subclass)."""
    return kind(launcher) == LOCAL


def runs_in_process(launcher: Any) -> bool:
    """Whether the jobs run in this process: Hydra's basic launcher, or a joblib launcher (explaunch's, Hydra's)
    with fewer than 2 workers (joblib then runs them in the calling process)."""
    name = kind(launcher)
    return name == BASIC or (name in WORKER_LAUNCHERS and workers(launcher) < 2)


def workers(launcher: Any) -> int:
    """How many worker processes explaunch's (or Hydra's joblib) launcher runs jobs in: ``n_jobs``, -1 every core
    this process may use, -2 all but one, ... (as joblib resolves it, without importing joblib)."""
    value = launcher.joblib.get("n_jobs", -1)
    n_jobs = 1 if value is None else int(value)  # None: joblib's default, 1
    return n_jobs if n_jobs > 0 else max(1, len(os.sched_getaffinity(0)) + 1 + n_jobs)


@dataclass(frozen=True)
class Task:
    """One job to run: its number, composed config and overrides, and its config hash as the sweep's planner
    computed it (the job's record takes it from here instead of validating the config again)."""

    num: int
    config: DictConfig
    overrides: list[str]
    config_hash: str | None = None


@dataclass(frozen=True)
class Gate:
    """What a job checks as it begins, after it may have waited in a worker's queue: whether the sweep has stopped
    launching (``stop_file`` exists) and how much of the sweep's time limit is left (``deadline``, epoch seconds),
    which caps the job's own limit (``hydra.sweeper.job_timeout_s``)."""

    stop_file: str | None = None  # None: nothing stops it (a launcher's public launch)
    deadline: float | None = None

    def closed(self) -> bool:
        stopped = self.stop_file is not None and Path(self.stop_file).exists()
        return stopped or (self.deadline is not None and time.time() >= self.deadline)

    def cap_timeout(self, config: DictConfig) -> None:
        if self.deadline is None:
            return
        given = OmegaConf.select(config, "hydra.sweeper.job_timeout_s", default=None)
        left = max(1.0, self.deadline - time.time())
        with open_dict(config):
            config.hydra.sweeper.job_timeout_s = round(min(left, float(given) if given else math.inf), 1)


def stream(launcher: Any, tasks: Iterator[Task], gate: Gate) -> Iterator[tuple[int, JobReturn | None]]:
    """Run tasks as Hydra's joblib launcher would, yielding ``(job number, JobReturn)`` as each job ends, or ``(job
    number, None)`` for a job that did not begin because ``gate`` closed. joblib keeps one task queued per worker
    (``pre_dispatch=2*n_jobs``, results unordered): a worker that ends a job begins the next at once, no job waits
    for another one, and the sweep composes and hands out the next while jobs run. ``tasks`` is read lazily; when it
    ends no further job starts."""
    setup_globals()
    configure_log(launcher.config.hydra.hydra_logging, launcher.config.hydra.verbose)
    Path(str(launcher.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
    context, task_function = launcher.hydra_context, launcher.task_function
    if runs_in_process(launcher):
        for task in tasks:
            log.info("Launching job #%d locally: %s", task.num, " ".join(filter_overrides(task.overrides)))
            job_return = run_composed(task, context, task_function, gate, job_id=_joblib_job_id(task))
            configure_log(launcher.config.hydra.hydra_logging, launcher.config.hydra.verbose)  # as Hydra's basic
            yield task.num, job_return
        return
    from joblib import Parallel, delayed

    settings = {**_joblib_settings(launcher), "return_as": "generator_unordered", "pre_dispatch": "2*n_jobs"}
    log.info("Joblib.Parallel(%s) is launching the jobs as workers free up", _joblib_line(settings))
    launch = shared_launch(launcher)

    from explaunch.redaction import redact_override

    handed_out: dict[int, Task] = {}

    def calls() -> Iterator[Any]:
        for task in tasks:
            shown = " ".join(redact_override(o) for o in filter_overrides(task.overrides))
            log.info("\t#%d : %s", task.num, shown)
            handed_out[task.num] = task
            yield delayed(_numbered)(task, launch, gate)

    for num, job_return in Parallel(**settings)(calls()):
        task = handed_out.pop(num)
        if job_return is None:
            yield num, None
            continue
        _number(task.config, _joblib_job_id(task), num)  # as the worker did: its configs are made from this one
        yield num, jobrun.ComposedJobReturn(job_return, task.config)


@dataclass(frozen=True)
class Launch:
    """Where the part that every job of one joblib launch shares lies: Hydra's context, the task function and
    Hydra's global state (~120 KB pickled), written once by the sweep and read once per worker. Sent with each job,
    as Hydra's joblib launcher does, it cost ~15 ms a job to pickle and ~6 ms to unpickle before the job began."""

    token: str
    path: str


_prepared: tuple[Any, Launch] | None = None  # in the sweep's process: the launcher and its Launch
_loaded: tuple[str, Any, Any] | None = None  # in a worker: (launch token, Hydra context, task function)


def shared_launch(launcher: Any) -> Launch:
    """In the sweep's process: the launcher's Launch, written once (the workers' warm-up loads it, the launches
    that follow reuse it); its folder is removed when the process exits."""
    global _prepared
    if _prepared is None or _prepared[0] is not launcher:
        import cloudpickle

        folder = tempfile.mkdtemp(prefix="explaunch-launch-")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        launch = Launch(uuid.uuid4().hex, str(Path(folder) / "launch.pkl"))
        with Path(launch.path).open("wb") as file:
            cloudpickle.dump((launcher.hydra_context, launcher.task_function, Singleton.get_state()), file)
        _prepared = (launcher, launch)
    return _prepared[1]


def _shared(launch: Launch) -> tuple[Any, Any]:
    """In a worker: the launch's Hydra context and task function; Hydra's global state set as the parent has it,
    once per launch, not per job as Hydra's joblib launcher does (each time Hydra scans every plugin, ~30 ms)."""
    global _loaded
    if _loaded is None or _loaded[0] != launch.token:
        with Path(launch.path).open("rb") as file:
            context, task_function, state = pickle.load(file)
        setup_globals()
        Singleton.set_state(state)
        _loaded = (launch.token, context, task_function)
    return _loaded[1], _loaded[2]


def _numbered(task: Task, launch: Launch, gate: Gate) -> tuple[int, JobReturn | None]:
    keep_worker_with_job_sized_memory()  # a worker that was not warmed up (a replacement) too
    context, task_function = _shared(launch)
    job_return = run_composed(task, context, task_function, gate, job_id=_joblib_job_id(task))
    if job_return is not None:  # the sweep's process makes these from its own copy (jobrun.ComposedJobReturn)
        job_return.cfg = job_return.hydra_cfg = None
    return task.num, job_return


def _joblib_job_id(task: Task) -> str:
    """The job id Hydra's joblib launcher gives: ``<job name>_<job number>``."""
    return f"{task.config.hydra.job.name}_{task.num}"


def _joblib_line(settings: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in settings.items())


def warm_workers(
    launcher: Any, workers: int, *, mlflow: bool, energy: bool, experiments: list[str], recording: bool = True
) -> threading.Thread | None:
    """joblib: start the worker processes and their one-time set-up (imports, the jobs' experiment modules among
    them; the list of installed packages; the energy meter sidecar and its hardware probe, about 0.4 s) in a
    background thread. The launches that follow reuse these workers (loky keeps an
    executor with the same settings). Without ``recording`` (another app's jobs: explaunch records none of them
    itself) a worker only loads the launch's shared state."""
    if kind(launcher) not in WORKER_LAUNCHERS:
        return None
    from joblib import Parallel, delayed, effective_n_jobs

    settings = _joblib_settings(launcher)
    if effective_n_jobs(settings.get("n_jobs", 1)) < 2:
        # joblib then runs jobs in this process: warming up here would import MLflow in this thread while the main
        # thread imports it too, which leaves a partially initialised module behind
        return None

    launch = shared_launch(launcher)

    def start() -> None:
        try:
            Parallel(**settings)(
                delayed(warm_up)(mlflow, energy, experiments, launch, recording) for _ in range(workers)
            )
        except Exception as ex:  # only a head start: the jobs start their workers anyway
            log.debug("warming the joblib workers failed: %s: %s", type(ex).__name__, ex)

    thread = threading.Thread(target=start, name="explaunch-warm-workers", daemon=True)
    thread.start()
    return thread


def warm_up(
    with_mlflow: bool,
    energy: bool,
    experiments: Sequence[str] = (),
    launch: Launch | None = None,
    recording: bool = True,
) -> None:
    """In a worker: what every job, and its recording, needs once per process; Hydra's state as the launch has it."""
    keep_worker_with_job_sized_memory()
    if launch is not None:
        _shared(launch)
    if not recording:
        return
    import importlib

    from explaunch.experiments import MODULES

    modules = [
        "explaunch.job.recording",
        "explaunch.job.task",
        "explaunch.tracking.store",
        "explaunch.measure.resources",
    ]
    modules += ["explaunch.launch.jobguard", "numpy.random", "pynvml"]  # every job seeds NumPy; its sampler tries NVML
    modules += [MODULES[name] for name in experiments if name in MODULES]
    for module in [*modules, *(["mlflow.tracking"] if with_mlflow else [])]:
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
    from explaunch.job.snapshot import installed_packages

    installed_packages()  # read once per process (~0.1 s): every job's snapshot lists them
    if energy:
        from explaunch.measure.energy import EnergyTracker

        with EnergyTracker():  # starts this worker's energy meter sidecar and waits for its hardware probe
            pass


def keep_worker_with_job_sized_memory() -> None:
    """In a joblib (loky) worker: do not end the worker for holding a job's memory (:mod:`explaunch._compat`).

    loky guards against leaking tasks: it takes a worker's memory after its first call as a reference and, when the
    worker holds 300 MB more than that after a later call, ends it; a job handed to it meanwhile goes to a new, cold
    worker, and joblib warns "A worker stopped while some jobs were given to the executor". Here the first call is
    the warm-up, made before any job ran, and what a job leaves in its worker is not a leak but the job's lasting
    footprint: the model's code modules, torch's allocator caches and kernels — about 250-300 MB for the demo's
    tiny LLM jobs (measured: 601 MB after the warm-up, 853-901 MB after a job, flat after the next ones), far more
    for a real model. So the demo's workers were ended at random, warm state lost. The threshold (a private name of
    loky's, checked at each call) is raised to the machine's memory: a job's growth is watched by our own sampler
    and its memory alerts instead. On a joblib whose loky was not read nothing changes."""
    import psutil

    from explaunch import _compat

    _compat.raise_loky_leak_threshold(psutil.virtual_memory().total)


def _joblib_settings(launcher: Any) -> dict[str, Any]:
    """``joblib.Parallel``'s settings from the launcher's (``hydra.launcher``), as Hydra's joblib launcher gives them:
    the loky backend (its threading backend does not work with Hydra), numbers given as strings made ints."""
    from explaunch import _compat

    settings = _compat.joblib_parallel_settings(dict(launcher.joblib))
    settings["backend"] = "loky"
    return settings


def _number(config: DictConfig, job_id: str, num: int) -> None:
    """The job's id and number in its config (read-only once a job ran with it in this process: joblib, 1 worker)."""
    with read_write(config.hydra.job), open_dict(config.hydra.job):
        config.hydra.job.id = job_id
        config.hydra.job.num = num


def run_composed(task: Task, hydra_context: Any, task_function: Any, gate: Gate, *, job_id: str) -> JobReturn | None:
    """One job from its composed config (in the sweep's process, or in a joblib worker); None when ``gate`` is
    closed as it would begin."""
    from explaunch.job.recording import planned_config_hash

    if gate.closed():
        return None
    config, num = task.config, task.num
    gate.cap_timeout(config)
    _number(config, job_id, num)
    token = planned_config_hash.set(task.config_hash)
    try:
        return jobrun.run_job(config, hydra_context, task_function)  # Hydra's run_job, with fewer copies
    finally:
        planned_config_hash.reset(token)
