"""What a sweep shows while it runs, and how it learns of each job's outcome as soon as the job writes it: the
progress line (:class:`Progress`) and the thread that reads each job's ``job.json`` as it appears
(:class:`BatchWatcher`), while the launcher blocks on its jobs."""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from explaunch.errors import RecordError
from explaunch.launch.settings import SWEEP_LOG, Job
from explaunch.sweepdir import records

log = logging.getLogger(SWEEP_LOG)


def outcome_line(job: Job, record: records.JobRecord) -> str:
    from explaunch.redaction import redact_override

    extra = f" ({record.error.type}: {record.error.message})" if record.error else ""
    shown = " ".join(redact_override(o) for o in job.overrides)
    return f"job {job.num} {record.status} in {record.duration_s:.1f} s: {shown}{extra}"


class Progress:
    """A live line on a terminal (tqdm); one log line per finished job otherwise."""

    def __init__(self, total: int, done: int, enabled: bool) -> None:
        self.counts = {"completed": done, "failed": 0}
        self.running = 0
        self.total = total
        self.bar: Any = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, unit="job", file=sys.stderr, dynamic_ncols=True)
            self._refresh()

    def _refresh(self) -> None:
        pending = self.total - sum(self.counts.values()) - self.running
        if self.bar is not None:
            self.bar.set_postfix_str(
                f"done {self.counts['completed']} running {self.running} failed {self.counts['failed']} "
                f"pending {pending}"
            )

    def started(self, count: int) -> None:
        self.running = max(0, self.running + count)
        self._refresh()

    def finished(self, job: Job, record: records.JobRecord, final: bool) -> None:
        self.running = max(0, self.running - 1)
        if final:
            self.counts["completed" if record.status == records.COMPLETED else "failed"] += 1
            if self.bar is not None:
                self.bar.update(1)
        self._refresh()
        if self.bar is None:
            log.info("[%d/%d] %s", sum(self.counts.values()), self.total, outcome_line(job, record))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class BatchWatcher(threading.Thread):
    """While the launcher blocks on a batch, reads each job's ``job.json`` as it appears (progress, ledger)."""

    def __init__(self, jobs: list[Job], job_dir: Callable[[Job], Path], on_record: Callable[[Job], None]) -> None:
        super().__init__(name="explaunch-batch-watcher", daemon=True)
        self.jobs = jobs
        self.job_dir = job_dir
        self.on_record = on_record
        self.seen: set[int] = set()
        self.lock = threading.Lock()
        self._stop_event = threading.Event()

    def poll(self) -> None:
        for job in list(self.jobs):  # a streaming launch adds jobs as they start
            with self.lock:
                if job.num in self.seen:
                    continue
                path = self.job_dir(job) / records.JOB_FILE
                if not path.exists():
                    continue
                try:
                    job.record = records.read_job_record(path)
                except RecordError:
                    continue  # being written: the next poll sees it whole
                self.seen.add(job.num)
            self.on_record(job)

    def run(self) -> None:
        while not self._stop_event.wait(0.5):
            self.poll()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)
        self.poll()

    def take(self, job: Job, record: records.JobRecord) -> None:
        """A record the sweep wrote for the job (which wrote none): taken as if read from its folder, once."""
        with self.lock:
            if job.num in self.seen:
                return
            job.record = record
            self.seen.add(job.num)
        self.on_record(job)
