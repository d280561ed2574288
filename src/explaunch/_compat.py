"""Every use of another library's private parts, in one place, each with why, the releases it was read against, a
check that falls back to the public path, and a test (tests/unit/test_compat.py) that fails loudly when upstream
changes them.

codecarbon
    explaunch's energy sidecar measures a job from another process. codecarbon (through 3.3) measures only the
    process it runs in (``tracking_mode="process"``) or the whole machine (``"machine"``); pointing its CPU and RAM
    meters at the job needs their private attributes (``CPU._pid/_process/_last_cpu_times/_last_measurement_time``,
    ``RAM._pid/_get_children_memories``, the tracker's ``_hardware`` list and ``_ensure_hardware_ready``), read in
    ``codecarbon/external/hardware.py``, ``ram.py`` and ``emissions_tracker.py`` of 3.3.2. Fallback (another
    release, or an attribute gone): the public ``tracking_mode="machine"``, and the record says the modelled CPU and
    RAM figures cover the machine (scope ``machine``), not the job.
py-cpuinfo
    codecarbon asks py-cpuinfo for the CPU's brand string, which py-cpuinfo finds by running itself in a subprocess
    (~1 s of a busy core per sidecar, measured: B2 and SLURM job start). ``answer_cpu_model`` replaces its public
    ``get_cpu_info`` in the sidecar's own process with the string /proc/cpuinfo lists; elsewhere nothing changes.
loky (vendored in joblib)
    Hydra's joblib launcher leaves joblib's reusable loky executor and its idle workers alive after a sweep; Python's
    exit ends them (loky's exit handler) and then tears down every module and object: 2.4 s after a 512-job sweep on
    2 cores, measured, all of it waited for by the user. :func:`end_joblib_workers` shuts that executor down as
    loky's exit handler would (workers told to end, and waited for), so that :func:`exit_fast` can skip the rest.
    Its private module global ``joblib.externals.loky.reusable_executor._executor`` (joblib 1.6.0) is the executor
    (loky's public ``get_reusable_executor`` would make one, or resize it). Fallback: Python's own exit.
    loky ends a worker that holds 300 MB more after a call than after its first one, taking a job's lasting footprint
    (a model's modules, allocator caches) for a leak: the worker's warm state is lost and joblib warns. Its private
    threshold ``joblib.externals.loky.process_executor._MAX_MEMORY_LEAK_SIZE`` (an int, bytes), read in joblib 1.6.0
    (loky 3.6.0), is raised to the machine's memory (:func:`raise_loky_leak_threshold`). Fallback: loky's own check.
Hydra
    ``hydra._internal.config_loader_impl.get_overrides_dirname`` (hydra-core 1.3.8) makes ``hydra.job.override_dirname``
    from a job's overrides; explaunch's composition shortcut (:mod:`explaunch.launch.composition`, jobs that differ
    only in plain values share one composition) needs it to name a job as Hydra would. Fallback: no shortcut, every
    job composed by Hydra's public config loader (about 0.1 s a job instead of ~2 ms).
    ``hydra._internal.deprecation_warning.deprecation_warning`` (hydra-core 1.3.8): Hydra's warning, or its error
    under ``HYDRA_DEPRECATION_WARNINGS_AS_ERRORS``, for an app without a version base whose job changes directory
    (:mod:`explaunch.job.jobrun`, Hydra's ``run_job`` reproduced). Fallback: the same check and message through the
    public ``warnings.warn``.
    ``hydra.core.utils._flush_loggers`` (hydra-core 1.3.8): flushes every logging handler at a job's end, as Hydra's
    ``run_job`` does (logging has no public call for it). Fallback: every handler of the root logger and of the
    loggers logging's manager knows, flushed.
    ``JobReturn._return_value`` (hydra-core 1.3.8): a failed job's exception. The public ``return_value`` re-raises
    it and writes ``Error executing job ...`` to stderr first. Fallback: that property, its stderr line dropped.
    ``hydra._internal.utils.get_args_parser`` (hydra-core 1.3.8): Hydra's command-line parser, so that explaunch's
    check of a bad command line before any job starts reads the flags as Hydra will. Fallback: a parser with the
    flags of hydra-core 1.3 (:func:`_own_args_parser`).
OmegaConf
    ``omegaconf._utils.get_omega_conf_dumper`` (omegaconf 2.3.0): the YAML representers of ``OmegaConf.to_yaml``,
    which :mod:`explaunch.job.jobrun` gives libyaml's faster emitter to write a job's ``.hydra`` files as Hydra does.
    Fallback: ``OmegaConf.to_yaml``.
    ``DictConfig._get_node`` (omegaconf 2.3.0): a child node as it is, unresolved (an interpolation or ``???`` stays
    one), for the schema's key check and for copying a config without its ``hydra`` node. Fallback: the child read
    through the public item access where that resolves, else left unchecked; the whole config copied.
MLflow
    ``mlflow.system_metrics.system_metrics_monitor.SystemMetricsMonitor`` (mlflow 3.x, read in 3.17): MLflow's system
    metrics sampler, attached to one run by id (``tracking.system_metrics=true``). MLflow's documented way,
    ``mlflow.start_run(run_id=..., log_system_metrics=True)``, makes the job's run the process's active fluent run,
    so that a task that starts its own run (``mlflow.start_run()``) would fail with "Run ... is already active".
    Fallback: that documented way (:func:`mlflow_system_metrics`).
CPython
    ``atexit._run_exitfuncs`` (CPython 3.11-3.13): runs the exit handlers, so that a process that has written
    everything can end with ``os._exit`` after them (:func:`exit_fast`), without Python's teardown of every module
    and object: ~0.35 s for the MLflow relay, 1.8 s for a 512-job sweep's parent (measured), all waited for by the
    user. Fallback: ``sys.exit``, Python's normal teardown.
hydra-joblib-launcher
    ``hydra_plugins.hydra_joblib_launcher._core.process_joblib_cfg`` (1.2.0) turns the numbers its config gives as
    strings (``pre_dispatch``, ``batch_size``, ``max_nbytes``) into ints before ``joblib.Parallel`` sees them;
    :mod:`explaunch.launch.fastlaunch` hands joblib the same settings. Fallback: the same conversion, done here.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import warnings
from collections.abc import Callable, Sequence
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from typing import Any

CODECARBON_READ = ("3.3",)  # major.minor releases whose private attributes were read
JOBLIB_READ = ("1.6",)  # joblib, for the loky it vendors
HYDRA_READ = ("1.3",)  # hydra-core
HYDRA_JOBLIB_READ = ("1.2",)  # hydra-joblib-launcher
OMEGACONF_READ = ("2.3",)  # omegaconf
MLFLOW_READ = ("3.17",)  # mlflow
CODECARBON_CPU_ATTRS = ("_pid", "_process", "_last_cpu_times", "_last_measurement_time")
CODECARBON_RAM_ATTRS = ("_pid", "_get_children_memories")


def release(distribution: str) -> str:
    """The installed release of ``distribution``, ``absent`` without one."""
    try:
        return version(distribution)
    except PackageNotFoundError:
        return "absent"


@cache
def release_read(distribution: str, read: tuple[str, ...]) -> bool:
    """Whether the installed ``distribution``'s major.minor release is among those whose private parts were read."""
    return ".".join(release(distribution).split(".")[:2]) in read


def _private(distribution: str, read: tuple[str, ...], module: str, name: str) -> Any:
    """``module.name``, where the installed ``distribution`` is a release whose private parts were read and still has
    it; None otherwise (the caller then takes its public path)."""
    if not release_read(distribution, read):
        return None
    try:
        return getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None


def codecarbon_release() -> str:
    return release("codecarbon")


def codecarbon_retargetable() -> bool:
    """Whether the installed codecarbon is one whose meters explaunch knows how to point at another process."""
    return ".".join(codecarbon_release().split(".")[:2]) in CODECARBON_READ


def codecarbon_meters(tracker: Any) -> list[Any] | None:
    """The tracker's meters (CPU, RAM, GPU objects), built now; None where this codecarbon does not have them."""
    ensure = getattr(tracker, "_ensure_hardware_ready", None)
    if ensure is None:
        return None
    ensure()  # else done by start()
    meters = getattr(tracker, "_hardware", None)
    return list(meters) if isinstance(meters, list) else None


def retarget_meters(meters: list[Any], client_pid: int, client: Any, memories: Any) -> bool:
    """Point the CPU meter at ``client`` (a psutil.Process) and the RAM meter at ``client_pid`` with ``memories()``
    listing the children's memory. False, touching nothing, where a meter lacks an attribute it is known by."""
    cpus = [m for m in meters if type(m).__name__ == "CPU"]
    rams = [m for m in meters if type(m).__name__ == "RAM"]
    if not all(hasattr(m, a) for m in cpus for a in CODECARBON_CPU_ATTRS) or not all(
        hasattr(m, a) for m in rams for a in CODECARBON_RAM_ATTRS
    ):
        return False
    for cpu in cpus:
        cpu._pid = client_pid
        cpu._process = client
        cpu._last_cpu_times = {}
        cpu._last_measurement_time = None
    for ram in rams:
        ram._pid = client_pid
        ram._get_children_memories = memories
    return True


def codecarbon_cpu_mode(tracker: Any) -> str:
    """How codecarbon got the CPU's power (its CPU meter's ``_mode``: ``intel_power_gadget``, ``intel_rapl``,
    ``constant``, ...), ``absent`` without a CPU meter, ``unknown`` where this codecarbon does not say."""
    meters = getattr(tracker, "_hardware", None)
    cpus = [m for m in meters or [] if type(m).__name__ == "CPU"]
    if not cpus:
        return "absent" if isinstance(meters, list) else "unknown"
    return str(getattr(cpus[0], "_mode", "unknown"))


def answer_cpu_model(model: str) -> bool:
    """py-cpuinfo, in this process, answers ``model`` at once instead of probing in a subprocess."""
    try:
        import cpuinfo
    except ImportError:
        return False
    cpuinfo.get_cpu_info = lambda: {"brand_raw": model}
    return True


def raise_loky_leak_threshold(nbytes: int) -> bool:
    """In a loky worker: let it hold ``nbytes`` more than after its first call before loky ends it as leaking (never
    lowers loky's threshold). False, touching nothing, on a joblib not read or without that int."""
    module = "joblib.externals.loky.process_executor"
    current = _private("joblib", JOBLIB_READ, module, "_MAX_MEMORY_LEAK_SIZE")
    if not isinstance(current, int) or isinstance(current, bool):
        return False
    loky: Any = importlib.import_module(module)
    loky._MAX_MEMORY_LEAK_SIZE = max(current, nbytes)
    return True


@cache
def _hydra_overrides_dirname() -> Callable[..., str] | None:
    make: Callable[..., str] | None = _private(
        "hydra-core", HYDRA_READ, "hydra._internal.config_loader_impl", "get_overrides_dirname"
    )
    return make


def overrides_dirname_known() -> bool:
    """Whether :func:`overrides_dirname` is Hydra's own (else composing jobs takes Hydra's public path)."""
    return _hydra_overrides_dirname() is not None


def overrides_dirname(overrides: Sequence[Any], *, kv_sep: str, item_sep: str, exclude_keys: Sequence[str]) -> str:
    """``hydra.job.override_dirname`` of a job with these (parsed) task overrides, as Hydra composes it; call only
    where :func:`overrides_dirname_known`."""
    make = _hydra_overrides_dirname()
    if make is None:
        raise RuntimeError(f"hydra-core {release('hydra-core')}: get_overrides_dirname not known (see _compat)")
    return make(overrides=list(overrides), kv_sep=kv_sep, item_sep=item_sep, exclude_keys=list(exclude_keys))


def hydra_deprecation_warning(message: str, stacklevel: int = 1) -> None:
    """Hydra's deprecation warning (``HydraDeprecationError`` under ``HYDRA_DEPRECATION_WARNINGS_AS_ERRORS``),
    attributed ``stacklevel`` frames above the caller, as Hydra's own ``deprecation_warning`` does."""
    warn = _private("hydra-core", HYDRA_READ, "hydra._internal.deprecation_warning", "deprecation_warning")
    if warn is not None:
        warn(message=message, stacklevel=stacklevel + 1)
        return
    import os

    from hydra.errors import HydraDeprecationError

    if os.environ.get("HYDRA_DEPRECATION_WARNINGS_AS_ERRORS"):
        raise HydraDeprecationError(message)
    warnings.warn(message, UserWarning, stacklevel=stacklevel + 1)


JOBLIB_INT_SETTINGS = ("pre_dispatch", "batch_size", "max_nbytes")


def joblib_parallel_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` (``hydra.launcher``'s joblib settings) as Hydra's joblib launcher hands them to
    ``joblib.Parallel``: the numbers given as strings made ints (a copy; ``settings`` is left as it is)."""
    out = dict(settings)
    convert = _private(
        "hydra-joblib-launcher", HYDRA_JOBLIB_READ, "hydra_plugins.hydra_joblib_launcher._core", "process_joblib_cfg"
    )
    if convert is not None:
        convert(out)
        return out
    for key in JOBLIB_INT_SETTINGS:  # what process_joblib_cfg of 1.2.0 does
        value = out.get(key)
        if value:
            with contextlib.suppress(TypeError, ValueError):
                out[key] = int(value)
    return out


def flush_loggers() -> None:
    """Flush every logging handler, as Hydra's ``run_job`` does at a job's end."""
    flush = _private("hydra-core", HYDRA_READ, "hydra.core.utils", "_flush_loggers")
    if flush is not None:
        flush()
        return
    import logging

    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    for logger in loggers:
        for handler in getattr(logger, "handlers", ()):
            with contextlib.suppress(Exception):
                handler.flush()


def job_return_value(job_return: Any) -> Any:
    """What a ``JobReturn`` holds: the task's return value, or the exception of a failed job (not raised)."""
    if job_return is None or not hasattr(type(job_return), "return_value"):  # reading it would raise
        return None
    if release_read("hydra-core", HYDRA_READ) and hasattr(job_return, "_return_value"):
        return job_return._return_value
    import io

    try:
        with contextlib.redirect_stderr(io.StringIO()):
            return job_return.return_value
    except BaseException as ex:  # the job's own exception, handed back as a value
        return ex


def hydra_args_parser() -> Any:
    """Hydra's command-line parser (an ``argparse.ArgumentParser``)."""
    hydras = _private("hydra-core", HYDRA_READ, "hydra._internal.utils", "get_args_parser")
    return hydras() if hydras is not None else _own_args_parser()


def _own_args_parser() -> Any:
    """The flags of hydra-core 1.3's ``get_args_parser``: what explaunch reads of a command line."""
    import argparse

    parser = argparse.ArgumentParser(add_help=False, description="Hydra")
    parser.add_argument("--help", "-h", action="store_true")
    parser.add_argument("--hydra-help", action="store_true")
    from hydra import __version__

    parser.add_argument("--version", action="version", version=f"Hydra {__version__}")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--cfg", "-c", choices=["job", "hydra", "all"])
    parser.add_argument("--resolve", action="store_true")
    parser.add_argument("--package", "-p")
    parser.add_argument("--run", "-r", action="store_true")
    parser.add_argument("--multirun", "-m", action="store_true")
    parser.add_argument("--shell-completion", "-sc", action="store_true")
    parser.add_argument("--config-path", "-cp")
    parser.add_argument("--config-name", "-cn")
    parser.add_argument("--config-dir", "-cd")
    parser.add_argument("--experimental-rerun")
    parser.add_argument("--info", "-i", const="all", nargs="?")
    return parser


def omegaconf_yaml_representers() -> dict[Any, Any] | None:
    """The representers of OmegaConf's YAML dumper (which strings ``OmegaConf.to_yaml`` quotes); None where this
    OmegaConf is not one read (then write YAML with ``OmegaConf.to_yaml``)."""
    get_omega_conf_dumper = _private("omegaconf", OMEGACONF_READ, "omegaconf._utils", "get_omega_conf_dumper")
    if get_omega_conf_dumper is None:
        return None
    representers = getattr(get_omega_conf_dumper(), "yaml_representers", None)
    return dict(representers) if isinstance(representers, dict) else None


def config_node(cfg: Any, key: str) -> Any:
    """The child ``key`` of the DictConfig ``cfg`` as a node, unresolved; None where it cannot be had without
    resolving (another OmegaConf, and ``key`` an interpolation or missing)."""
    if release_read("omegaconf", OMEGACONF_READ):
        get_node = getattr(cfg, "_get_node", None)
        if get_node is not None:
            return get_node(key)
    from omegaconf import OmegaConf

    if OmegaConf.is_missing(cfg, key) or OmegaConf.is_interpolation(cfg, key):
        return None
    return cfg[key]


class _FluentSystemMetrics:
    """MLflow's documented system metrics: the run made this process's active run with ``log_system_metrics``."""

    def __init__(self, run_id: str, tracking_uri: str, interval_s: float) -> None:
        # imported by name: explaunch.tracking is the package that imports MLflow; this only hands it its monitor
        self.mlflow: Any = importlib.import_module("mlflow")
        self.mlflow.set_tracking_uri(tracking_uri)
        importlib.import_module("mlflow.system_metrics").set_system_metrics_sampling_interval(interval_s)
        self.mlflow.start_run(run_id=run_id, log_system_metrics=True)

    def finish(self) -> None:
        self.mlflow.end_run()


def mlflow_system_metrics(run_id: str, tracking_uri: str, interval_s: float) -> Any:
    """MLflow's system metrics logged to ``run_id`` every ``interval_s`` from now on; ``finish()`` stops them."""
    monitor_class = _private(
        "mlflow", MLFLOW_READ, "mlflow.system_metrics.system_metrics_monitor", "SystemMetricsMonitor"
    )
    if monitor_class is None:
        return _FluentSystemMetrics(run_id, tracking_uri, interval_s)
    monitor = monitor_class(run_id, sampling_interval=interval_s, tracking_uri=tracking_uri)
    monitor.start()
    return monitor


def run_exit_handlers() -> bool:
    """Run the ``atexit`` handlers now (each once: they are cleared after). False, running nothing, on a Python that
    does not have CPython's ``atexit._run_exitfuncs``."""
    import atexit

    run = getattr(atexit, "_run_exitfuncs", None)
    if run is None:
        return False
    run()
    return True


def end_joblib_workers(wait: bool = True) -> bool:
    """Shut joblib's reusable loky executor down now, as loky does at Python's exit: its workers end once the work
    given to them is done (``wait``: and are waited for). A later ``joblib.Parallel`` makes a new one. False where
    there is none, or this joblib is not one read."""
    if "joblib" not in sys.modules:  # nothing of it was ever used
        return False
    executor = _private("joblib", JOBLIB_READ, "joblib.externals.loky.reusable_executor", "_executor")
    shutdown = getattr(executor, "shutdown", None)
    if shutdown is None:
        return False
    shutdown(wait=wait)
    return True


EXIT_WAIT_S = 5.0  # how long exit_fast waits for threads and worker processes that are ending


def exit_fast(code: object) -> None:
    """End the process as ``sys.exit(code)`` would, less the teardown of its modules and objects: other threads
    ended, exit handlers run (child processes joined, files closed by their owners), logging and standard streams
    flushed, then ``os._exit``. Python's own exit where another non-daemon thread still runs (Python would wait for
    it), where worker processes are alive (joblib's: Python's exit tells their executor to end them first; without
    it the exit handler that joins them waits forever), or where this Python lacks what it needs. joblib's idle
    workers (Hydra's joblib launcher) are ended first, as Python's exit would end them, and then what Python's exit
    would wait for (other non-daemon threads, non-daemon child processes) is waited for up to ``EXIT_WAIT_S``."""
    import atexit
    import logging
    import os
    import threading
    import time

    # only where joblib's workers were just told to end is there something to wait for: another thread or process
    # that Python's exit would wait for is not waited for here (Python's exit may be what ends it)
    deadline = time.monotonic() + (EXIT_WAIT_S if end_joblib_workers() else 0.0)
    while True:
        others = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
        multiprocessing = sys.modules.get("multiprocessing")
        children = [p for p in multiprocessing.active_children() if not p.daemon] if multiprocessing else []
        if not (others or children) or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    if others or children or not hasattr(atexit, "_run_exitfuncs"):
        raise SystemExit(code)
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # as sys.exit: the message to stderr, status 1
        print(code, file=sys.stderr)
        status = 1
    run_exit_handlers()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)
