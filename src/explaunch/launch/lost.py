"""The record the sweep writes for a job that wrote none of its own: from what the launcher returned for it where
its task ran (an app without explaunch's recording callback), else as lost (its worker was killed, the batch was
interrupted, SLURM ended it), with the reason read from the launcher's error where it gave one."""

from __future__ import annotations

import contextlib
import re
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus

from explaunch import _compat
from explaunch.errors import JobInterrupted
from explaunch.job.recording import now_iso, resolved_config, returned_metrics
from explaunch.launch import jobguard
from explaunch.launch.settings import Job
from explaunch.sweepdir import records

RECORDED_FROM_RETURN = "sweep parent: from the launcher's JobReturn (the job wrote no record of its own)"
RECORDED_LOST = "sweep parent: the job left no record of its own"


def lost_record(job: Job, key: str, error_type: str, message: str) -> records.JobRecord:
    """The record of a job that could not write its own (killed worker, interrupted batch), ``key`` its config
    hash."""
    now = now_iso()
    return records.JobRecord(
        status=records.status_of_error(error_type, message),
        overrides=job.overrides,
        config=resolved_config(job.cfg),
        config_hash=key,
        start_time=now,
        end_time=now,
        duration_s=0.0,
        job_num=job.num,
        error=records.JobError(type=error_type, message=message),
        info={"recorded_by": RECORDED_LOST},
    )


def lost_job_reason(job_return: Any) -> tuple[str, str]:
    """Why a job left no record, from what the launcher returned for it (a submitit error on SLURM)."""
    error = _compat.job_return_value(job_return)
    if not isinstance(error, BaseException):
        return ("WorkerDied", "the job left no record")
    text = str(error)
    first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    if isinstance(error, JobInterrupted):  # JobCancelled too (explaunch cancel)
        return (type(error).__name__, first)
    state = re.search(r"\(state: ([^)\n]*)\)", text)  # submitit: "... has not produced any output (state: FAILED)"
    full = state.group(1).strip() if state else ""  # as sacct says it: "CANCELLED by 0"
    name = full.split(" ")[0]
    if name == "TIMEOUT" or "state: TIMEOUT" in text:
        return ("JobTimeout", f"SLURM ended the job at its time limit ({type(error).__name__})")
    # an OOM as the sweeper knows it (it halves the batch when hydra.sweeper.oom_fallback): the job's state, or, as
    # submitit runs the job as an srun step, the step's (the job itself then ends FAILED): srun and slurmstepd say so
    if name == "OUT_OF_MEMORY" or re.search(r"oom-kill event|^srun: error: .*: Out Of Memory", text, re.M):
        where = f"state {full}" if name == "OUT_OF_MEMORY" else f"in its srun step; job state {full or 'unknown'}"
        return ("OutOfMemoryError", f"SLURM ended the job: out of memory, over its hydra.launcher.mem_gb ({where})")
    if jobguard.stop_requested() and ("CANCELLED" in text or "state: PENDING" in text):
        error = jobguard.interruption(f"cancelled when the sweep was interrupted ({first})")
        return (type(error).__name__, str(error))
    if name == "CANCELLED":  # scancel by someone (not by this sweep): not retried
        return ("JobCancelled", f"SLURM cancelled the job (state: {full})")
    seen = f" (SLURM state {name})" if name and name not in first else ""
    return ("WorkerDied", f"{type(error).__name__}{seen}: {first}")


def task_ran(job_return: JobReturn) -> bool:
    """Whether ``job_return`` is that of a task function that ran to its end or raised (Hydra's ``run_job`` names the
    task once it ran it), not a launcher's word that the job left no result (explaunch's submitit launchers)."""
    return job_return.task_name is not None and job_return.status in (JobStatus.COMPLETED, JobStatus.FAILED)


def record_from_return(
    job: Job, job_return: JobReturn, job_dir: Path | None, key: str, launched: float
) -> records.JobRecord:
    """The record of a job that wrote none, from the launcher's ``JobReturn``: completed, or failed with the task's
    exception (its traceback written to ``job_dir`` where it came back with it and the job wrote none); the task's
    return value, where it is a mapping, gives the metrics (its numbers). The job ran from the time its folder got
    Hydra's files (``.hydra/``; else from ``launched``) to now, when the sweep learnt its outcome."""
    end = time.time()
    start = launched
    if job_dir is not None:
        with contextlib.suppress(OSError):
            start = min(end, (job_dir / ".hydra" / "overrides.yaml").stat().st_mtime)
    value = _compat.job_return_value(job_return)  # the task's return value or exception, not raised
    error = None if job_return.status == JobStatus.COMPLETED else returned_error(value, job_dir)
    return records.JobRecord(
        status=records.COMPLETED if error is None else records.status_of_error(error.type, error.message),
        overrides=job.overrides,
        config=resolved_config(job.cfg),
        config_hash=key,
        start_time=datetime.fromtimestamp(start, UTC).isoformat(timespec="milliseconds"),
        end_time=datetime.fromtimestamp(end, UTC).isoformat(timespec="milliseconds"),
        duration_s=round(end - start, 3),
        job_num=job.num,
        metrics={} if error is not None else returned_metrics(value),
        info={"recorded_by": RECORDED_FROM_RETURN},
        error=error,
    )


def returned_error(error: Any, job_dir: Path | None) -> records.JobError:
    """A failed task's exception as the record's error: its type, first line and base classes (to match
    ``retry_on``); its traceback in ``job_dir`` where it has one (a job run in this process) and none is there."""
    if not isinstance(error, BaseException):
        return records.JobError(type="UnknownError", message=repr(error))
    text = str(error).strip()
    trace = None
    if job_dir is not None and error.__traceback__ is not None:
        path = job_dir / records.TRACEBACK_FILE
        if not path.exists():
            records.write_text_atomic(path, "".join(traceback.format_exception(error)))
        trace = path.name
    return records.JobError(
        type=type(error).__name__,
        message=text.splitlines()[0] if text else "",
        traceback_file=trace,
        bases=[c.__name__ for c in type(error).__mro__[1:] if c not in (BaseException, object)],
    )
