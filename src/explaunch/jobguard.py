"""Signals and time limits, in the sweep's parent and in each job.

Parent: the first Ctrl-C / SIGTERM asks the sweep to stop launching (``stop_requested``); a second one interrupts
what is running (``KeyboardInterrupt``). Job: Ctrl-C / SIGTERM become :class:`~explaunch.errors.JobInterrupted`, and
a job past its time limit gets :class:`~explaunch.errors.JobTimeout` (SIGALRM), both ordinary exceptions that Hydra
records like any failure. Signal handlers need the main thread, where Hydra runs jobs with every local launcher.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType
from typing import Any

from explaunch.errors import JobInterrupted, JobTimeout

log = logging.getLogger(__name__)

_stop = threading.Event()


def stop_requested() -> bool:
    return _stop.is_set()


def request_stop(reason: str) -> None:
    if not _stop.is_set():
        log.warning("%s: no new jobs will start; running jobs end. Ctrl-C again to interrupt them.", reason)
    _stop.set()


def reset_stop() -> None:
    _stop.clear()


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


class SweepSignals:
    """Installed by the sweeper in the parent for the sweep's duration."""

    def __init__(self) -> None:
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if _stop.is_set():
            raise KeyboardInterrupt
        request_stop(signal.Signals(signum).name)

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
