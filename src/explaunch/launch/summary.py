"""The end of a sweep: each record with earlier attempts lists them, and one summary on stderr says what happened
(counts, why it stopped early, a table of the jobs not completed, how to finish it)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from omegaconf import DictConfig

from explaunch.launch.attempts import earlier_attempts
from explaunch.launch.settings import ATTEMPTS_DIR, Job
from explaunch.sweepdir import records
from explaunch.table import format_table


def finish_records(jobs: list[Job], ran: list[Job], job_dir: Callable[[Job], Path]) -> None:
    """Each job run now (in ``ran``) that has earlier attempts (this run's or a previous run's, archived under
    attempts/<k>/) lists them in its job.json."""
    from explaunch.callbacks import deferred

    deferred.flush()  # the relay writes run ids into the records: it is done before they are rewritten here
    for job in jobs:
        path = job_dir(job)
        if job in ran and (path / ATTEMPTS_DIR).is_dir() and (path / records.JOB_FILE).exists():
            records.write_job_record(path, replace(records.read_job_record(path), attempts=earlier_attempts(path)))


def print_summary(
    sweep_dir: Path,
    jobs: list[Job],
    not_run: list[Job],
    skipped: int,
    stop_reason: str | None,
    job_dir: Callable[[Job], Path],
    store_config: DictConfig | None,
) -> None:
    """The sweep's summary on stderr; ``store_config``: explaunch's app's config, whose store's runs not taken are
    listed (None for another app)."""
    bad = [j for j in jobs if j.status not in (None, records.COMPLETED)]
    done = sum(1 for j in jobs if j.status == records.COMPLETED)
    lines = [
        f"sweep {sweep_dir}: {done} completed, {len(bad)} not completed, {skipped} skipped (done before), "
        f"{len(not_run)} not run"
    ]
    reached = bool(stop_reason) and str(stop_reason).startswith("stop_when")
    if reached:
        lines.append(f"target reached: {stop_reason}")
    elif stop_reason:
        lines.append(f"stopped early: {stop_reason}")
    if bad:
        from explaunch.redaction import redact_override

        common = set.intersection(*(set(j.overrides) for j in jobs))  # show what tells the jobs apart
        rows = []
        for job in bad:
            record = job.record
            error = record.error if record else None
            trace = job_dir(job) / error.traceback_file if error and error.traceback_file else None
            rows.append(
                {
                    "job": job.num,
                    "status": job.status,
                    "overrides": " ".join(redact_override(o) for o in job.overrides if o not in common),
                    "error": error.type if error else "",
                    "message": (error.message if error else "")[:100],
                    "traceback": str(trace) if trace else "",
                }
            )
        lines.append(format_table(rows, ["job", "status", "overrides", "error", "message", "traceback"]))
    if bad or (not_run and not reached):
        lines.append(f"to finish it: run the same command again with hydra.sweep.dir={sweep_dir}")
    if store_config is not None:
        from explaunch.tracking import sync as store_sync

        lines += store_sync.pending_runs_lines(sweep_dir, store_config)  # runs the store did not take
    print("\n".join(lines), file=sys.stderr)
