"""The sweep's decisions (explaunch.launch.policy), by table: what follows a job's attempt, and when the sweep stops."""

from __future__ import annotations

import pytest

from explaunch.launch.policy import (
    DONE,
    GIVE_UP,
    HALVE_BATCH,
    RETRY,
    Decision,
    backoff_s,
    decide,
    stop_reason,
)
from explaunch.launch.settings import SweeperSettings
from explaunch.sweepdir import records

SETTINGS = SweeperSettings(max_retries=2, backoff_s=3.0, min_batch_size=2)


def record(
    status: str, error_type: str | None = None, message: str = "", bases: tuple[str, ...] = ()
) -> records.JobRecord:
    error = records.JobError(type=error_type, message=message, bases=list(bases)) if error_type else None
    return records.JobRecord(
        status=status,
        overrides=["seed=0"],
        config={},
        config_hash="abc",
        start_time="2026-12-05T10:00:00+00:00",
        end_time="2026-12-05T10:00:01+00:00",
        duration_s=1.0,
        job_num=0,
        error=error,
    )


FAILED, TIMEOUT = records.FAILED, records.TIMEOUT


@pytest.mark.parametrize(
    ("settings", "rec", "attempt", "batch", "expected"),
    [
        # completed: done, whatever else
        (SETTINGS, record(records.COMPLETED), 1, 8, Decision(DONE)),
        # a retryable error (its type in retry_on) within max_retries: again, after backoff_s * 2**(attempt-1)
        (SETTINGS, record(FAILED, "RuntimeError", "boom"), 1, None, Decision(RETRY, 3.0)),
        (SETTINGS, record(FAILED, "OSError", "disk"), 2, None, Decision(RETRY, 6.0)),
        (SETTINGS, record(FAILED, "WorkerDied", "killed"), 1, 8, Decision(RETRY, 3.0)),
        # matched through a base class
        (
            SETTINGS,
            record(FAILED, "ConnectionResetError", "x", ("ConnectionError", "OSError")),
            1,
            None,
            Decision(RETRY, 3.0),
        ),
        # past max_retries: give up
        (SETTINGS, record(FAILED, "RuntimeError", "boom"), 3, None, Decision(GIVE_UP)),
        (SweeperSettings(), record(FAILED, "RuntimeError", "boom"), 1, None, Decision(GIVE_UP)),  # max_retries=0
        # not in retry_on: give up
        (SETTINGS, record(FAILED, "ValueError", "bad"), 1, None, Decision(GIVE_UP)),
        # never retried, whatever retry_on says: a bad config, an interrupted job
        (
            SweeperSettings(max_retries=5, retry_on=("ConfigError",)),
            record(FAILED, "ConfigError", "x"),
            1,
            None,
            Decision(GIVE_UP),
        ),
        (SETTINGS, record(records.INTERRUPTED, "JobInterrupted", "ctrl-c"), 1, 8, Decision(GIVE_UP)),
        (SETTINGS, record(FAILED, "Subclass", "x", ("JobInterrupted", "RuntimeError")), 1, None, Decision(GIVE_UP)),
        # cancelled by someone (scancel): not in retry_on by default
        (SETTINGS, record(records.CANCELLED, "JobCancelled", "scancel"), 1, None, Decision(GIVE_UP)),
        # a timeout: given up unless retry_on names JobTimeout
        (SETTINGS, record(TIMEOUT, "JobTimeout", "late"), 1, None, Decision(GIVE_UP)),
        (
            SweeperSettings(max_retries=1, retry_on=("JobTimeout",)),
            record(TIMEOUT, "JobTimeout", "late"),
            1,
            None,
            Decision(RETRY, 1.0),
        ),
        # a failed record without an error: final
        (SETTINGS, record(FAILED), 1, 8, Decision(GIVE_UP)),
        # OOM with oom_fallback and a batch above min_batch_size: half the batch (not below the minimum)
        (SETTINGS, record(FAILED, "OutOfMemoryError", "CUDA"), 1, 8, Decision(HALVE_BATCH, 3.0, 4)),
        (SETTINGS, record(FAILED, "MemoryError", ""), 2, 3, Decision(HALVE_BATCH, 6.0, 2)),
        (SETTINGS, record(FAILED, "RuntimeError", "CUDA out of memory. Tried"), 1, 16, Decision(HALVE_BATCH, 3.0, 8)),
        # ... however many attempts it took (the fallback is not counted against max_retries)
        (SETTINGS, record(FAILED, "OutOfMemoryError", "CUDA"), 5, 8, Decision(HALVE_BATCH, 48.0, 4)),
        # OOM at min_batch_size: an OOM that is not in retry_on is given up
        (SETTINGS, record(FAILED, "OutOfMemoryError", "CUDA"), 1, 2, Decision(GIVE_UP)),
        # ... one in retry_on is retried as it is, within max_retries
        (SETTINGS, record(FAILED, "RuntimeError", "out of memory"), 1, 2, Decision(RETRY, 3.0)),
        # OOM without oom_fallback, or with no batch the sweep may change (another app): as any other error
        (SweeperSettings(oom_fallback=False), record(FAILED, "OutOfMemoryError", "x"), 1, 8, Decision(GIVE_UP)),
        (SETTINGS, record(FAILED, "OutOfMemoryError", "x"), 1, None, Decision(GIVE_UP)),
    ],
)
def test_what_follows_an_attempt(
    settings: SweeperSettings, rec: records.JobRecord, attempt: int, batch: int | None, expected: Decision
) -> None:
    assert decide(settings, rec, attempt, batch) == expected


@pytest.mark.parametrize(
    "rec",
    [
        record(FAILED, "RuntimeError", "boom"),
        record(FAILED, "OutOfMemoryError", "CUDA"),
    ],
)
def test_nothing_runs_again_once_the_sweep_stops(rec: records.JobRecord) -> None:
    assert not decide(SETTINGS, rec, 1, 8).final
    assert decide(SETTINGS, rec, 1, 8, stopping=True) == Decision(GIVE_UP)
    assert decide(SETTINGS, record(records.COMPLETED), 1, 8, stopping=True) == Decision(DONE)


def test_final_decisions() -> None:
    assert Decision(DONE).final and Decision(GIVE_UP).final
    assert not Decision(RETRY, 1.0).final and not Decision(HALVE_BATCH, 1.0, 4).final


def test_backoff_doubles_with_each_attempt() -> None:
    assert [backoff_s(SETTINGS, attempt) for attempt in (1, 2, 3, 4)] == [3.0, 6.0, 12.0, 24.0]
    assert backoff_s(SweeperSettings(backoff_s=0.0), 3) == 0.0


C, F = records.COMPLETED, records.FAILED
RATE = SweeperSettings(max_failure_rate=0.5, min_jobs_for_rate=4)


@pytest.mark.parametrize(
    ("finished", "expected"),
    [
        ([], None),
        ([F, F, F], None),  # every job failed, but fewer than min_jobs_for_rate finished
        ([F, F, F, F], "failure rate 4/4 = 1.00 passed max_failure_rate=0.5"),
        ([F, F, C, C], None),  # 0.5 is not past 0.5
        ([F, F, F, C], "failure rate 3/4 = 0.75 passed max_failure_rate=0.5"),
        ([records.TIMEOUT, records.INTERRUPTED, F, C, C], "failure rate 3/5 = 0.60 passed max_failure_rate=0.5"),
        ([C] * 10, None),
    ],
)
def test_the_failure_rate_stops_the_sweep_only_after_min_jobs_for_rate(
    finished: list[str], expected: str | None
) -> None:
    assert stop_reason(RATE, finished) == expected


def test_the_default_failure_rate() -> None:
    settings = SweeperSettings()  # 0.8 after 5 jobs
    assert stop_reason(settings, [F, F, F, F, C]) is None
    assert stop_reason(settings, [F] * 5) == "failure rate 5/5 = 1.00 passed max_failure_rate=0.8"


def test_the_deadline_stops_the_sweep_at_max_duration_h() -> None:
    settings = SweeperSettings(max_duration_h=0.5)
    assert stop_reason(settings, [], now=99.0, deadline=100.0) is None
    assert stop_reason(settings, [], now=100.0, deadline=100.0) == "max_duration_h=0.5 reached"
    assert stop_reason(settings, [C], now=1e9, deadline=None) is None  # no max_duration_h


def test_an_interruption_comes_first() -> None:
    settings = SweeperSettings(max_failure_rate=0.5, min_jobs_for_rate=4, max_duration_h=1.0)
    assert stop_reason(settings, [F] * 4, interrupted=True, now=200.0, deadline=100.0) == "interrupted"
    assert stop_reason(settings, [F] * 4, now=200.0, deadline=100.0) == "max_duration_h=1.0 reached"
