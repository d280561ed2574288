"""What follows each attempt of a job: its ledger line and progress as its record appears, the record the sweep
writes where the job wrote none, whether it runs again (:func:`explaunch.launch.policy.decide`), and whether the
sweep stops launching (:func:`explaunch.launch.policy.stop_reason`, or a write of the sweep's own that failed)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn

from explaunch.launch import jobguard, policy
from explaunch.launch.attempts import archive_attempt, with_batch
from explaunch.launch.controls import SweepControls
from explaunch.launch.lost import lost_record, record_from_return, task_ran
from explaunch.launch.plan import SweepPlan
from explaunch.launch.progress import BatchWatcher, Progress
from explaunch.launch.settings import ATTEMPTS_DIR, DISK_ERRNOS, SWEEP_LOG, Job, SweeperSettings, why
from explaunch.sweepdir import records

log = logging.getLogger(SWEEP_LOG)


class Outcomes:
    """The sweep's account of the jobs it runs: those run now (``ran``), what the launcher returned for each
    (``job_returns``), the progress line, and why the sweep stops launching (``stop_reason``, None while it goes
    on)."""

    def __init__(self, settings: SweeperSettings, plan: SweepPlan) -> None:
        self.settings = settings
        self.plan = plan
        self.stop_reason: str | None = None
        self.deadline = time.monotonic() + settings.max_duration_h * 3600 if settings.max_duration_h else None
        self.ran: list[Job] = []
        self.job_returns: dict[int, JobReturn] = {}  # job number -> what the launcher returned (its last attempt)
        self.progress: Progress | None = None
        self.stop_file: Path | None = None  # while a streaming launch runs (explaunch.launch.fastlaunch.Gate)
        self.controls: SweepControls | None = None  # limits, cooldown, budgets, stop_when (set by the sweep)

    # ---- one job -----------------------------------------------------------------------------------------------
    def decision(self, job: Job, stopping: bool = False) -> policy.Decision:
        """What follows the job's latest attempt (it has a record)."""
        record = job.record
        assert record is not None
        oom = self.plan.ours and record.error is not None and policy.is_oom(record.error)
        size = job.batch_size if oom else None  # the batch knob is explaunch's schema; it matters for an OOM only
        return policy.decide(self.settings, record, job.attempt, size, stopping=stopping)

    def final_status(self, job: Job) -> str | None:
        """The job's outcome once it will not run again; while a streaming launch runs, from its record."""
        if job.status is not None:
            return job.status
        record = job.record
        if record is not None and self.decision(job).final:
            return record.status
        return None

    def start_attempt(self, job: Job) -> None:
        job.attempt += 1
        try:
            archive_attempt(self.plan.job_dir(job))
        except OSError as ex:
            self.cannot_write(f"job {job.num}'s earlier attempt to {ATTEMPTS_DIR}/", ex)
        if job not in self.ran:
            self.ran.append(job)

    def note_record(self, job: Job) -> None:
        """A job's record appeared: ledger line and progress (called from the watcher thread too)."""
        record = job.record
        assert record is not None and self.progress is not None
        plan = self.plan
        details = {"batch_size": job.batch_size, "launched_with": job.overrides}
        entry = plan.ledger_entry(job, record, {**details, **({"program": plan.program} if plan.program else {})})
        try:
            plan.ledger.append(entry)
        except OSError as ex:  # a full disk: the job's own record stands; a rerun runs it again
            self.cannot_write(f"job {job.num} in the ledger", ex)
        from explaunch.callbacks import deferred

        deferred.job_recorded(plan.job_dir(job))  # the MLflow relay logs the job's run, when there is one
        final = record.status == records.COMPLETED or self.decision(job).final
        self.progress.finished(job, record, final)
        if self.controls is not None:
            self.controls.seen(job, record)

    def decide(self, job: Job) -> Job | None:
        """The job, ready for another attempt (its overrides, config and record set for it), or None when its
        outcome is final (``job.status``)."""
        record = job.record
        assert record is not None
        decision = self.decision(job, stopping=self.stop_reason is not None)
        if decision.final:
            job.status = record.status
            return None
        if decision.action == policy.HALVE_BATCH:
            assert decision.batch_size is not None
            plan = with_batch(job.overrides, decision.batch_size, job.cfg)
            log.warning("job %d ran out of memory at batch %s: retrying with %s", job.num, job.batch_size, plan)
            job.cfg = self.plan.compose(plan)  # the planner's composer: shared compositions, Hydra's own fields
        else:
            plan = list(job.overrides)
            log.warning(
                "job %d failed (%s): retry %d of %d", job.num, record.error, job.attempt, self.settings.max_retries
            )
        job.overrides = plan
        job.record = None
        return job

    def settle(self, jobs: list[Job], lost: Callable[[Job], tuple[str, str]]) -> list[Job]:
        """After a launch: a record for each job that left none, and the jobs to run again."""
        retries = []
        for job in jobs:
            if job.record is None:
                job.record = self.record_lost(job, *lost(job))
                self.note_record(job)
            again = self.decide(job)
            if again is not None:
                retries.append(again)
        return retries

    def record_returned(self, job: Job, job_return: Any, launched: float, watcher: BatchWatcher) -> None:
        """Keep what the launcher returned for the job; where its task ran but the job wrote no record of its own
        (an app without explaunch's recording callback), write its record, built from that ``JobReturn``, as its
        ``job.json``: each job's record has one writer, the job where it records itself, else this parent."""
        if not isinstance(job_return, JobReturn):
            return
        self.job_returns[job.num] = job_return
        job_dir = self.plan.job_dir(job)
        if not task_ran(job_return) or (job_dir / records.JOB_FILE).exists():
            return
        try:
            record = record_from_return(job, job_return, job_dir, self.plan.job_key(job.cfg), launched)
            records.write_job_record(job_dir, record)
        except OSError as ex:  # no record in its folder: the job counts as lost (settle), a rerun runs it again
            self.cannot_write(f"job {job.num}'s record", ex)
            return
        watcher.take(job, record)

    def record_lost(self, job: Job, error_type: str, message: str) -> records.JobRecord:
        """The record of a job that could not write its own (killed worker, interrupted batch), written to its
        folder."""
        job_dir = self.plan.job_dir(job)
        record = lost_record(job, self.plan.job_key(job.cfg), error_type, message)
        try:
            records.write_job_record(job_dir, record)
        except OSError as ex:  # reported in the summary from this record, and run again by a rerun
            self.cannot_write(f"job {job.num}'s record", ex)
        return record

    # ---- the sweep ---------------------------------------------------------------------------------------------
    def should_stop(self) -> bool:
        if self.stop_reason is not None:
            return True
        finished = [status for job in self.ran if (status := self.final_status(job)) is not None]
        self.stop_reason = policy.stop_reason(
            self.settings,
            finished,
            interrupted=jobguard.stop_requested(),
            now=time.monotonic(),
            deadline=self.deadline,
        )
        if self.stop_reason == "interrupted":
            self.stop_reason = jobguard.stop_cause()  # cancelled, when explaunch cancel sent the signal
        if self.stop_reason is None and self.controls is not None:
            self.stop_reason = self.controls.stop_reason(running=sum(1 for j in self.ran if j.record is None))
        if self.stop_reason is not None:
            log.warning("sweep stops launching jobs: %s", self.stop_reason)
            if self.stop_file is not None:  # jobs queued in a worker see it and do not begin
                with contextlib.suppress(OSError):
                    self.stop_file.touch()
        return self.stop_reason is not None

    def check_disk_error(self, ex: BaseException) -> None:
        """A job ended by a full disk (or a read-only one) as it wrote its folder: no new job could do better."""
        if isinstance(ex, OSError) and ex.errno in DISK_ERRNOS:
            self.cannot_write("a job's folder", ex)

    def cannot_write(self, what: str, ex: OSError) -> None:
        """A write of the sweep's own failed (a full disk, a folder gone read-only): no new job starts, and the
        summary and ``sweep.json`` say why. What was written stays (every write is atomic or one whole line).

        Log files on that disk (Hydra's job log) fail too, and Python's logging would print a traceback for every
        line it cannot write: from here on such a failure is dropped silently (``logging.raiseExceptions``), the
        console handler still prints each line."""
        if ex.errno in DISK_ERRNOS:
            logging.raiseExceptions = False
        log.error("cannot write %s: %s", what, why(ex))
        if self.stop_reason is None or self.stop_reason in ("interrupted", "cancelled"):
            self.stop_reason = f"cannot write {what}: {why(ex)}"
        self.should_stop()
