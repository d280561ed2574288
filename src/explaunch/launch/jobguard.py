"""Signals and time limits, in the sweep's parent and in each job.

Parent: the first Ctrl-C / SIGTERM asks the sweep to stop launching (``stop_requested``); a second one interrupts
what is running (``KeyboardInterrupt``). Job: Ctrl-C / SIGTERM become :class:`~explaunch.errors.JobInterrupted`, and
a job past its time limit gets :class:`~explaunch.errors.JobTimeout` (SIGALRM), both ordinary exceptions that Hydra
records like any failure. Signal handlers need the main thread, where Hydra runs jobs with every local launcher.

``explaunch cancel`` writes the sweep folder's ``.cancel`` marker before it signals the sweep: the same signals then
mean a cancel, and a job they end is recorded ``cancelled`` (:class:`JobCancelled`) instead of ``interrupted``. The
sweep names its folder in the environment (:func:`watch_sweep`) so that its jobs, wherever they run, find the marker.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from explaunch.errors import JobInterrupted, JobTimeout

log = logging.getLogger(__name__)

CANCEL_FILE = ".cancel"  # in the sweep folder: written by explaunch cancel, removed when the sweep starts again
SWEEP_DIR_VARIABLE = "EXPLAUNCH_SWEEP_DIR"  # the running sweep's folder, inherited by its jobs


class JobCancelled(JobInterrupted):
    """``explaunch cancel`` reached a running job: recorded ``cancelled`` (``records.STATUS_OF_ERROR``), never
    retried (it is a :class:`~explaunch.errors.JobInterrupted`)."""


def watch_sweep(sweep_dir: Path) -> None:
    """Name the sweep's folder to this process and the jobs it starts from now on (workers, SLURM jobs inherit the
    environment), so that a signal finds the sweep's cancel marker."""
    os.environ[SWEEP_DIR_VARIABLE] = str(sweep_dir.absolute())


def cancel_marker() -> Path | None:
    folder = os.environ.get(SWEEP_DIR_VARIABLE)
    return Path(folder) / CANCEL_FILE if folder else None


def cancel_requested() -> bool:
    """Whether the sweep this process belongs to is being cancelled (``explaunch cancel``)."""
    marker = cancel_marker()
    try:
        return marker is not None and marker.exists()
    except OSError:
        return False


def stop_cause() -> str:
    """What a stop on a signal is: ``cancelled`` (explaunch cancel) or ``interrupted`` (Ctrl-C, SIGTERM)."""
    return "cancelled" if cancel_requested() else "interrupted"


def interruption(message: str) -> JobInterrupted:
    """The error that ends a job on a signal: :class:`JobCancelled` while the sweep is cancelled."""
    return JobCancelled(f"cancelled (explaunch cancel): {message}") if cancel_requested() else JobInterrupted(message)


def _before_launch(signum: int, frame: FrameType | None) -> None:
    if cancel_requested():  # SweepSignals, once the sweep reaches its launch, finds the marker and stops at once
        log.warning("%s (explaunch cancel): the sweep will start no job", signal.Signals(signum).name)
        return
    raise KeyboardInterrupt


def guard_start() -> Any:
    """From a sweep's start until it installs :class:`SweepSignals`: a SIGINT sent by ``explaunch cancel`` (its
    marker written) is taken as the cancel it is, rather than a ``KeyboardInterrupt`` out of whatever the sweep was
    doing; any other SIGINT stays one. Returns the handler to put back (:func:`unguard_start`)."""
    if not _in_main_thread():
        return None
    return signal.signal(signal.SIGINT, _before_launch)


def unguard_start(previous: Any) -> None:
    if previous is not None and _in_main_thread():
        signal.signal(signal.SIGINT, previous)


_stop = threading.Event()
_hurry = threading.Event()  # Ctrl-C while the sweep finishes: stop waiting for the MLflow relay
_stop_hooks: list[Callable[[], None]] = []  # run once when a stop is first requested (the sweeper's stop file)


def stop_requested() -> bool:
    return _stop.is_set()


def request_stop(reason: str) -> None:
    first = not _stop.is_set()
    _stop.set()
    if first:
        if cancel_requested():
            log.warning("%s (explaunch cancel): no new jobs will start; running jobs are cancelled.", reason)
        else:
            log.warning("%s: no new jobs will start; running jobs end. Ctrl-C again to interrupt them.", reason)
        for hook in list(_stop_hooks):
            try:
                hook()
            except Exception:  # a hook must never turn a Ctrl-C into a traceback
                log.debug("stop hook %r failed", hook, exc_info=True)


def add_stop_hook(hook: Callable[[], None]) -> None:
    """``hook()`` runs as soon as a stop is requested (in the signal handler: keep it short), e.g. to tell jobs
    already queued in the workers not to begin; it runs at once if a stop was already requested."""
    _stop_hooks.append(hook)
    if _stop.is_set():
        hook()


def remove_stop_hook(hook: Callable[[], None]) -> None:
    with contextlib.suppress(ValueError):
        _stop_hooks.remove(hook)


def reset_stop() -> None:
    _stop.clear()
    _hurry.clear()


def hurry_requested() -> bool:
    """Whether the user asked (Ctrl-C while the sweep finished) not to wait for the MLflow relay any longer."""
    return _hurry.is_set()


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


class SweepSignals:
    """Installed by the sweeper in the parent for the sweep's duration."""

    def __init__(self) -> None:
        self._previous: dict[int, Any] = {}
        self._closing_presses: int | None = None  # counted once no job runs any more (see closing())

    def closing(self) -> None:
        """No job runs any more; the sweep writes its records and waits for its MLflow relay. A Ctrl-C now (the second
        one of a user who pressed twice, say) must not cut that short with a traceback: the first one only says what
        is going on, the next one stops the waiting for MLflow (``hurry_requested``); records are written either way."""
        self._closing_presses = 0

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self._closing_presses is not None:
            _stop.set()
            self._closing_presses += 1
            if self._closing_presses == 1:
                log.warning(
                    "%s: no job runs; the sweep is writing its records and logging its MLflow runs "
                    "(Ctrl-C again to stop waiting for MLflow: explaunch sync logs what is left)",
                    name,
                )
            elif not _hurry.is_set():
                log.warning("%s: not waiting for MLflow any longer", name)
                _hurry.set()
            return
        if _stop.is_set():
            raise KeyboardInterrupt
        request_stop(name)

    def __enter__(self) -> SweepSignals:
        reset_stop()
        if _in_main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        if cancel_requested():  # cancelled while the sweep planned and warmed up: no job starts
            request_stop("explaunch cancel")
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class JobGuard:
    """Armed at job start, disarmed at job end (by :class:`explaunch.callbacks.JobGuardCallback`)."""

    def __init__(self, timeout_s: float | None) -> None:
        self.timeout_s = timeout_s
        self._previous: dict[int, Any] = {}

    def _interrupt(self, signum: int, frame: FrameType | None) -> None:
        request_stop(f"{signal.Signals(signum).name} in a job")  # the basic launcher runs jobs in the parent
        raise interruption(f"interrupted by {signal.Signals(signum).name}")

    def _timeout(self, signum: int, frame: FrameType | None) -> None:
        raise JobTimeout(f"job ran past its time limit of {self.timeout_s:g} s")

    def arm(self) -> JobGuard:
        if not _in_main_thread():
            return self
        signals = [signal.SIGINT]
        if "SLURM_JOB_ID" not in os.environ:  # under SLURM, submitit's own SIGTERM/USR2 handling stays in charge
            signals.append(signal.SIGTERM)
        for sig in signals:
            self._previous[sig] = signal.signal(sig, self._interrupt)
        if self.timeout_s:
            self._previous[signal.SIGALRM] = signal.signal(signal.SIGALRM, self._timeout)
            signal.setitimer(signal.ITIMER_REAL, self.timeout_s)
        return self

    def disarm(self) -> None:
        if signal.SIGALRM in self._previous:
            signal.setitimer(signal.ITIMER_REAL, 0)
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
