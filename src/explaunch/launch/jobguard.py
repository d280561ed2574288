"""Signals and time limits, in the sweep's parent and in each job.

Parent: the first Ctrl-C / SIGTERM asks the sweep to stop launching (``stop_requested``); a second one interrupts
what is running (``KeyboardInterrupt``). Job: Ctrl-C / SIGTERM become :class:`~explaunch.errors.JobInterrupted`, and
a job past its time limit gets :class:`~explaunch.errors.JobTimeout` (SIGALRM), both ordinary exceptions that Hydra
records like any failure. Signal handlers need the main thread, where Hydra runs jobs with every local launcher.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from explaunch.errors import JobInterrupted, JobTimeout

log = logging.getLogger(__name__)

_stop = threading.Event()
_hurry = threading.Event()  # Ctrl-C while the sweep finishes: stop waiting for the MLflow relay
_stop_hooks: list[Callable[[], None]] = []  # run once when a stop is first requested (the sweeper's stop file)


def stop_requested() -> bool:
    return _stop.is_set()


def request_stop(reason: str) -> None:
    first = not _stop.is_set()
    _stop.set()
    if first:
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
        raise JobInterrupted(f"interrupted by {signal.Signals(signum).name}")

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
