"""The sweep's decisions, as pure functions: no I/O, no clock (the caller passes the times in), no state.

- :func:`decide`: after one attempt of a job, from its record, its attempt number and batch size: done, retry
  after a backoff, retry with half the batch (an out-of-memory error), or give up.
- :func:`stop_reason`: whether the sweep stops launching jobs: interrupted, past ``max_duration_h``, or a failure
  rate past ``max_failure_rate`` once ``min_jobs_for_rate`` jobs have a final outcome.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from explaunch.launch.settings import SweeperSettings
from explaunch.sweepdir import records

NEVER_RETRIED = frozenset({"ConfigError", "JobInterrupted"})
OOM_TYPES = frozenset({"OutOfMemoryError", "MemoryError"})

DONE = "done"  # completed
GIVE_UP = "give up"  # not completed, and not run again
RETRY = "retry"  # the same overrides, after a backoff
HALVE_BATCH = "halve batch"  # out of memory: again with half the batch, after a backoff


@dataclass(frozen=True)
class Decision:
    """What becomes of a job after an attempt: ``action`` is one of DONE, GIVE_UP, RETRY, HALVE_BATCH."""

    action: str
    backoff_s: float = 0.0  # how long to wait before the next attempt (RETRY, HALVE_BATCH)
    batch_size: int | None = None  # the next attempt's batch size (HALVE_BATCH)

    @property
    def final(self) -> bool:
        """Whether the job will not run again."""
        return self.action in (DONE, GIVE_UP)


def backoff_s(settings: SweeperSettings, attempt: int) -> float:
    """The wait before the attempt after attempt number ``attempt`` (1 for the first): exponential backoff."""
    return float(settings.backoff_s * 2 ** (attempt - 1))


def is_oom(error: records.JobError) -> bool:
    """Whether the error is an out-of-memory one (by its type, a base class, or its message)."""
    return bool({error.type, *error.bases} & OOM_TYPES) or "out of memory" in error.message.lower()


def decide(
    settings: SweeperSettings,
    record: records.JobRecord,
    attempt: int,
    batch_size: int | None = None,
    *,
    stopping: bool = False,
) -> Decision:
    """What follows attempt number ``attempt`` (1 for the first) of a job that left ``record``.

    ``batch_size`` is the job's batch size where the sweep may change it (explaunch's own app), else None (no OOM
    fallback). ``stopping``: the sweep is stopping, so nothing runs again. An error that is ``NEVER_RETRIED``
    (a bad config, an interrupted job) or a timeout (unless ``retry_on`` names ``JobTimeout``) is final; an
    out-of-memory error with ``oom_fallback`` and a batch above ``min_batch_size`` runs again with half the batch
    (however many attempts it took); an error named in ``retry_on`` (its type or a base class) runs again while
    ``attempt <= max_retries``."""
    if record.status == records.COMPLETED:
        return Decision(DONE)
    error = record.error
    if error is None or stopping:
        return Decision(GIVE_UP)
    names = {error.type, *error.bases}
    if names & NEVER_RETRIED or (record.status == records.TIMEOUT and "JobTimeout" not in settings.retry_on):
        return Decision(GIVE_UP)
    if is_oom(error) and settings.oom_fallback and batch_size is not None and batch_size > settings.min_batch_size:
        half = max(settings.min_batch_size, batch_size // 2)
        return Decision(HALVE_BATCH, backoff_s(settings, attempt), half)
    if names & set(settings.retry_on) and attempt <= settings.max_retries:
        return Decision(RETRY, backoff_s(settings, attempt))
    return Decision(GIVE_UP)


def stop_reason(
    settings: SweeperSettings,
    finished: Sequence[str],
    *,
    interrupted: bool = False,
    now: float | None = None,
    deadline: float | None = None,
) -> str | None:
    """Why the sweep stops launching jobs, or None to go on.

    ``finished``: the final statuses of the jobs run so far that will not run again; ``interrupted``: a Ctrl-C or
    SIGTERM came; ``now`` and ``deadline``: times on one clock (the deadline is the start plus ``max_duration_h``)."""
    if interrupted:
        return "interrupted"
    if deadline is not None and now is not None and now >= deadline:
        return f"max_duration_h={settings.max_duration_h} reached"
    failed = sum(1 for status in finished if status != records.COMPLETED)
    rate = failed / len(finished) if finished else 0.0
    if len(finished) >= settings.min_jobs_for_rate and rate > settings.max_failure_rate:
        return f"failure rate {failed}/{len(finished)} = {rate:.2f} passed max_failure_rate={settings.max_failure_rate}"
    return None
