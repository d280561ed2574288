"""explaunch's sweep loop, behind the Hydra sweeper plugin in ``hydra_plugins/explaunch_plugins``.

It expands the grid as Hydra's basic sweeper does, composes and validates every job before the first one starts,
then launches jobs in batches through whatever launcher is configured. Around that: every job runs whatever the
others do; failures that may pass are retried with exponential backoff; an out-of-memory job is retried with half
the batch; a ledger lets a re-run of the same sweep folder run only what is not done; the sweep stops launching when
too many jobs fail, when its time is up or on Ctrl-C; and at the end one summary says what happened.

The job folders stay the source of truth: outcomes are read back from each job's ``job.json``. A job that left no
record gets one written here, by the parent: from what the launcher returned for it where its task ran (an app
without explaunch's recording callback), else as lost (its worker was killed, the batch was interrupted).

Any Hydra app may use this sweeper. Only explaunch's own app (:func:`explaunch.config.is_explaunch_config`) is held
to explaunch's schema, with one-line errors; any other app's composition errors are Hydra's own, and its jobs are
known by a hash of their task config (:func:`explaunch.config.task_config_hash`). ``sweep()`` returns what Hydra's
basic sweeper returns: the jobs' ``JobReturn`` in batches.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import inspect
import logging
import math
import os
import re
import shutil
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig, OmegaConf, open_dict

from explaunch.config import config_hash, is_explaunch_config, task_config_hash, validate
from explaunch.errors import ExplaunchError, FolderNotWritable, JobInterrupted, RecordError
from explaunch.job.recording import now_iso, resolved_config, returned_metrics
from explaunch.launch import jobguard
from explaunch.launch.sweeplock import SweepLock
from explaunch.sweepdir import records
from explaunch.sweepdir.ledger import Ledger, LedgerEntry
from explaunch.table import format_table

log = logging.getLogger(__name__)

ATTEMPTS_DIR = "attempts"
NEVER_RETRIED = frozenset({"ConfigError", "JobInterrupted"})
OOM_TYPES = frozenset({"OutOfMemoryError", "MemoryError"})
# Files a job writes; an earlier attempt's are moved to attempts/<k>/ before the job runs again in its folder.
ATTEMPT_FILES = (
    records.JOB_FILE,
    records.TRACEBACK_FILE,
    "resources.csv",
    "emissions.csv",
    "git.patch",
    "*.log",
    "stdout.txt",
    "stderr.txt",
    "artifacts",
)
EXIT_INTERRUPTED = 130
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})  # writes that no job can make succeed
STOP_FILE = ".stop"  # while a streaming launch runs: the sweep stops launching, queued jobs do not begin
PLAN_FILE = "plan.json"  # what this run of the sweep means to do, for the dashboard: rewritten at each (re)start


@dataclass(frozen=True)
class SweeperSettings:
    """``hydra.sweeper.*`` (see hydra_plugins/explaunch_plugins/config.py for what each means)."""

    max_batch_size: int | None = None
    max_retries: int = 0
    backoff_s: float = 1.0
    retry_on: tuple[str, ...] = ("OSError", "RuntimeError", "TimeoutError", "WorkerDied")
    oom_fallback: bool = True
    min_batch_size: int = 1
    rerun_failed: bool = True
    max_failure_rate: float = 0.8
    min_jobs_for_rate: int = 5
    job_timeout_s: float | None = None
    max_duration_h: float | None = None
    progress: bool = True
    dashboard: bool = False
    dashboard_port: int | None = None
    limits: dict[str, float] = field(default_factory=dict)  # the limits set (LimitsConf), poll_s included
    detach: bool = False
    order: str = "grid"
    order_seed: int | None = None
    cooldown_s: float = 0.0
    temperature_warn_c: float = 5.0
    budget: dict[str, float] = field(default_factory=dict)  # the budgets set (BudgetConf)
    stop_when: str | None = None

    @classmethod
    def from_config(cls, sweeper: DictConfig) -> SweeperSettings:
        values = {k: sweeper[k] for k in cls.__dataclass_fields__ if k in sweeper}
        if "retry_on" in values:
            values["retry_on"] = tuple(values["retry_on"])
        for name in ("limits", "budget"):  # only what is set: an empty dict means nothing to watch
            node = values.get(name)
            values[name] = {k: float(v) for k, v in (node or {}).items() if v is not None}
        if set(values["limits"]) <= {"poll_s"}:
            values["limits"] = {}
        return cls(**values)


@dataclass
class Job:
    """One point of the grid and what became of it."""

    index: int  # position in the grid
    grid_overrides: list[str]  # as the grid defines it; the ledger key is the hash of this config
    key: str
    cfg: DictConfig
    num: int = -1  # job number: its folder under the sweep dir
    overrides: list[str] = field(default_factory=list)  # as launched (differs after an OOM fallback)
    attempt: int = 0
    status: str | None = None  # the final outcome in this run (None: not run)
    record: records.JobRecord | None = None

    @property
    def batch_size(self) -> int | None:
        value = OmegaConf.select(self.cfg, "batching.batch_size", default=None)
        return int(value) if value is not None else None


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


class SweepRunner:
    def __init__(
        self,
        settings: SweeperSettings,
        launcher: Any,
        config_loader: Any,
        config: DictConfig,
        task_function: Any = None,
    ) -> None:
        self.settings = settings
        self.launcher = launcher
        self.loader = config_loader
        self.config = config
        self.ours = is_explaunch_config(config)  # explaunch's own app: its schema, store, energy meter, batch knob
        # another app's program, as its jobs' ledger lines name it (see runs_anew)
        self.program = None if self.ours else program_fingerprint(task_function)
        self.sweep_dir = Path(str(config.hydra.sweep.dir))
        self.ledger = Ledger(self.sweep_dir)
        self.stop_reason: str | None = None
        self.deadline = time.monotonic() + settings.max_duration_h * 3600 if settings.max_duration_h else None
        self.ran: list[Job] = []
        self.jobs: list[Job] = []  # the grid, once planned
        self.job_returns: dict[int, JobReturn] = {}  # job number -> what the launcher returned (its last attempt)
        self.progress: Progress | None = None
        self.compose: Any = None  # the planner's JobComposer: the launch composes retries from its cache
        self.stop_file: Path | None = None  # while a streaming launch runs (explaunch.launch.fastlaunch.Gate)
        # Jobs may share compositions only where nothing but the job number names a job's folder.
        sweep_settings = OmegaConf.to_container(config.hydra.sweep, resolve=False)
        self.fast_values = isinstance(sweep_settings, dict) and sweep_settings.get("subdir") == "${hydra.job.num}"

    # ---- planning --------------------------------------------------------------------------------------------
    def expand(self, arguments: Sequence[str], params: dict[str, str]) -> list[list[str]]:
        """The grid, exactly as Hydra's basic sweeper expands it (lists, range(), glob(), hydra.sweeper.params)."""
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

        parser = OverridesParser.create(config_loader=self.loader)
        parsed = parser.parse_overrides([*(f"{k}={v}" for k, v in params.items()), *arguments])
        return BasicSweeper.split_arguments(parsed, None)[0]

    def plan(self, grid: list[list[str]]) -> list[Job]:
        """Compose and validate every job before any starts; give each its ledger key and job number."""
        from explaunch.launch.composition import JobComposer

        compose = self.compose = JobComposer(
            lambda overrides: self.loader.load_sweep_config(self.config, overrides),
            self.loader,
            share_compositions=self.fast_values,
            one_line_errors=self.ours,  # another app: Hydra's own composition error, as its basic sweeper raises it
        )
        jobs = []
        for index, overrides in enumerate(grid):
            cfg = compose(list(overrides))
            key = self.job_key(cfg)
            jobs.append(Job(index, list(overrides), key, cfg, overrides=list(overrides)))
        taken = {entry.job_num for entry in self.ledger.latest.values()}
        for job in jobs:
            entry = self.ledger.latest.get(job.key)
            if entry is not None:
                job.num, job.attempt = entry.job_num, entry.attempt
        for job in jobs:
            if job.num < 0:
                job.num = job.index if job.index not in taken else max(taken | {len(jobs) - 1}) + 1
                taken.add(job.num)
        return jobs

    def job_key(self, cfg: DictConfig) -> str:
        """A job's identity (its ledger key, its record's ``config_hash``): explaunch's app validates the config
        (a ConfigError ends the sweep); another app's is the hash of its task config."""
        return config_hash(validate(cfg)) if self.ours else task_config_hash(cfg)

    def runs_anew(self, jobs: list[Job]) -> bool:
        """Whether another app's sweep runs every job again: all of them completed in this folder before, but
        by another program (its task function's file changed since). A job is known by its config alone, so a
        rerun resumes a sweep that did not finish whatever changed (fixing the bug that failed a job, as in
        explaunch's app), and a finished sweep rerun as it was runs nothing; a changed program rerun into a finished
        folder is a new sweep, as Hydra's basic sweeper makes it (Hydra's own launcher tests do just that)."""
        if self.ours or self.program is None or not jobs:
            return False
        entries = [self.ledger.latest.get(j.key) for j in jobs]
        return all(e is not None and e.status == records.COMPLETED for e in entries) and any(
            e is not None and e.details.get("program") != self.program for e in entries
        )

    def to_run(self, job: Job) -> bool:
        status = self.ledger.status(job.key)
        if status is None or status == records.INTERRUPTED:
            return True
        if status == records.COMPLETED:
            return False
        return self.settings.rerun_failed

    def job_dir(self, job: Job) -> Path:
        with open_dict(job.cfg):
            job.cfg.hydra.job.num = job.num
        try:
            subdir = str(OmegaConf.select(job.cfg, "hydra.sweep.subdir"))
        except Exception:  # an interpolation only a running job can resolve: Hydra's default layout
            subdir = str(job.num)
        return self.sweep_dir / subdir

    # ---- running ---------------------------------------------------------------------------------------------
    def run(self, arguments: Sequence[str], params: dict[str, str]) -> int:
        if self.ours and self.config.energy.enabled and self.jobs_run_here():
            from explaunch.measure import meter

            meter.prestart()  # the jobs' energy meter probes the hardware while the sweep is planned
        grid = self.expand(arguments, params)
        jobs = self.jobs = self.plan(grid)  # a bad job stops the sweep here, before anything is written
        # the MLflow store: writable, not deleted, agreeing with the job folders
        from explaunch.tracking import sync as store_sync

        # a dead store stops the sweep before its folder; another app's jobs log nothing to explaunch's store
        store_ok = store_sync.check_before_sweep(self.config) if self.ours else False
        lock = self.lock_folder()
        try:
            fresh = Ledger(self.sweep_dir)
            if fresh.latest != self.ledger.latest:  # a sweep ended here between our planning and our lock
                self.ledger = fresh
                jobs = self.jobs = self.plan(grid)
            self.adopt_unledgered(jobs)
            if self.ours:  # under the lock: it reconciles the store with this folder's jobs, no other sweep's now
                store_sync.reconcile_before_sweep(self.config, self.sweep_dir, store_ok)
            return self.run_jobs(jobs)
        finally:
            lock.release()

    def adopt_unledgered(self, jobs: list[Job]) -> None:
        """A job whose folder holds its completed record but whose ledger line is missing (the sweep was killed
        between the job writing its record and the sweep writing the line) is done: its line is written now, so a
        rerun neither runs it again nor leaves its store with two runs for one job. The record must be this job's
        (its ``config_hash`` is the job's key)."""
        for job in jobs:
            if self.ledger.status(job.key) is not None:
                continue
            path = self.job_dir(job)
            try:
                record = records.read_job_record(path)
            except (RecordError, OSError):
                continue
            if record.status != records.COMPLETED or record.config_hash != job.key:
                continue
            log.info("job %d: completed before the sweep stopped (its record, no ledger line): not run again", job.num)
            job.attempt = max(job.attempt, 1)
            entry = LedgerEntry(
                key=job.key,
                job_num=job.num,
                overrides=job.grid_overrides,
                status=record.status,
                attempt=job.attempt,
                job_dir=str(path.relative_to(self.sweep_dir)),
                time=now_iso(),
                duration_s=record.duration_s,
                details={"launched_with": job.overrides, "recovered_from": records.JOB_FILE},
            )
            try:
                self.ledger.append(entry)
            except OSError as ex:  # it runs again, as before
                log.warning("cannot write the ledger line of job %d: %s", job.num, why(ex))

    def lock_folder(self) -> SweepLock:
        """Create the sweep folder and take its lock (one sweep at a time), or raise a one-line error."""
        try:
            self.sweep_dir.mkdir(parents=True, exist_ok=True)
            lock = SweepLock(self.sweep_dir)
            lock.acquire()
        except OSError as ex:
            raise FolderNotWritable(f"sweep folder {self.sweep_dir} cannot be created or written: {why(ex)}") from None
        return lock

    def run_jobs(self, jobs: list[Job]) -> int:
        try:
            from explaunch.job.jobrun import save_yaml

            save_yaml(self.config, self.sweep_dir / "multirun.yaml")  # as OmegaConf.save, secrets redacted
            anew = self.runs_anew(jobs)
            pending = sorted((j for j in jobs if anew or self.to_run(j)), key=lambda j: j.num)
            skipped = len(jobs) - len(pending)
            self.write_plan(jobs, pending)
        except OSError as ex:
            raise FolderNotWritable(f"sweep folder {self.sweep_dir} cannot be written: {why(ex)}") from None
        if anew:
            log.info("every job of this sweep completed before in %s: running them all again", self.sweep_dir)
        if skipped:
            log.info(
                "resuming %s: %d of %d jobs already done, %d to run", self.sweep_dir, skipped, len(jobs), len(pending)
            )
        dashboard = self.start_dashboard() if self.settings.dashboard else None
        self.progress = Progress(len(jobs), skipped, self.settings.progress)
        if pending:  # the MLflow sweep run (explaunch.callbacks), only when there is something to run
            from explaunch.callbacks import deferred
            from explaunch.launch import fastlaunch

            try:
                deferred.start_sweep()
            except Exception as ex:  # as Hydra treats a failing callback: the jobs run and record it
                log.warning("MLflow sweep run not started: %s: %s", type(ex).__name__, ex)
            # jobs import MLflow only where the sweep's relay does not log their runs
            mlflow = self.ours and self.config.tracking.backend == "mlflow" and deferred.relay is None
            warming = fastlaunch.warm_workers(
                self.launcher,
                min(self.batch_size(), len(pending)),
                mlflow=mlflow,
                energy=self.ours and bool(self.config.energy.enabled),
                experiments=sorted({str(OmegaConf.select(j.cfg, "experiment_type.name")) for j in pending})
                if self.ours
                else [],
                recording=self.ours,
            )
            if warming is not None:
                warming.join()
        with jobguard.SweepSignals() as signals:
            try:
                self.launch_all(pending)
            finally:
                self.progress.close()
            signals.closing()  # a Ctrl-C from here on never cuts the records short
            not_run = [j for j in pending if j.status is None]
            try:
                self.finish_records(jobs)
                records.write_sweep_record(self.sweep_dir, self.stop_reason, [j.overrides for j in not_run])
            except OSError as ex:  # the summary below still says what happened
                log.error("cannot write %s: %s", records.SWEEP_FILE, why(ex))
                self.stop_reason = self.stop_reason or f"cannot write {records.SWEEP_FILE}: {why(ex)}"
            self.print_summary(jobs, not_run, skipped)
        if dashboard is not None:
            dashboard.stop()
        outcomes = [j.status or self.ledger.status(j.key) for j in jobs if j not in not_run]
        if not not_run and all(status == records.COMPLETED for status in outcomes):
            return 0
        interrupted = records.INTERRUPTED in outcomes or self.stop_reason == "interrupted"
        return EXIT_INTERRUPTED if interrupted else 1

    def write_plan(self, jobs: list[Job], pending: list[Job]) -> None:
        """``plan.json``: every job of the grid (those done before are ``skipped``), the parallelism and this
        process, so that a dashboard can tell pending from running jobs and whether the sweep still runs."""
        from explaunch.redaction import redact_override

        to_run = {id(job) for job in pending}
        plan = {
            "started": time.time(),
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "parallelism": self.batch_size(),
            "jobs": [
                {
                    "num": job.num,
                    "job_dir": str(self.job_dir(job).relative_to(self.sweep_dir)),
                    "overrides": [redact_override(o) for o in job.overrides],
                    "skipped": id(job) not in to_run,
                }
                for job in jobs
            ],
        }
        records.write_json_atomic(self.sweep_dir / PLAN_FILE, plan)

    def start_dashboard(self) -> Any:
        from explaunch.review.dashboard.server import start_in_thread

        dashboard = start_in_thread(self.sweep_dir, self.settings.dashboard_port, "hydra.sweeper.dashboard_port")
        print(f"dashboard: {dashboard.url} (while the sweep runs)", file=sys.stderr, flush=True)
        return dashboard

    def should_stop(self) -> bool:
        if self.stop_reason is not None:
            return True
        if jobguard.stop_requested():
            self.stop_reason = "interrupted"
        elif self.deadline is not None and time.monotonic() >= self.deadline:
            self.stop_reason = f"max_duration_h={self.settings.max_duration_h} reached"
        else:
            finished = [j for j in self.ran if self.final_status(j) is not None]
            failed = [j for j in finished if self.final_status(j) != records.COMPLETED]
            rate = len(failed) / len(finished) if finished else 0.0
            if len(finished) >= self.settings.min_jobs_for_rate and rate > self.settings.max_failure_rate:
                self.stop_reason = (
                    f"failure rate {len(failed)}/{len(finished)} = {rate:.2f} passed "
                    f"max_failure_rate={self.settings.max_failure_rate}"
                )
        if self.stop_reason is not None:
            log.warning("sweep stops launching jobs: %s", self.stop_reason)
            if self.stop_file is not None:  # jobs queued in a worker see it and do not begin
                with contextlib.suppress(OSError):
                    self.stop_file.touch()
        return self.stop_reason is not None

    def jobs_run_here(self) -> bool:
        """Whether the jobs run in this process: the basic launcher, or joblib with one worker (no joblib import)."""
        kind = type(self.launcher).__name__
        return kind == "BasicLauncher" or (kind == "JoblibLauncher" and self.batch_size() < 2)

    def final_status(self, job: Job) -> str | None:
        """The job's outcome once it will not run again; while a streaming launch runs, from its record."""
        if job.status is not None:
            return job.status
        record = job.record
        if record is not None and self.retry_plan(job) is None:
            return record.status
        return None

    def batch_size(self) -> int:
        if self.settings.max_batch_size:
            return self.settings.max_batch_size
        launcher = self.config.hydra.launcher
        n_jobs = OmegaConf.select(launcher, "n_jobs", default=None)
        if n_jobs is not None:  # joblib: -1 is every core, -2 all but one, ...
            cores = os.cpu_count() or 1
            return max(1, int(n_jobs) if int(n_jobs) > 0 else cores + 1 + int(n_jobs))
        parallel = OmegaConf.select(launcher, "array_parallelism", default=None)  # submitit
        if parallel is not None:
            return max(1, int(parallel))
        return 1  # the basic launcher runs one job at a time anyway

    def next_batch(self, queue: list[Job]) -> list[Job]:
        """Jobs with consecutive numbers from the head of the queue: a launcher numbers a batch consecutively."""
        batch = [queue.pop(0)]
        while queue and len(batch) < self.batch_size() and queue[0].num == batch[-1].num + 1:
            batch.append(queue.pop(0))
        return batch

    def launch_all(self, pending: list[Job]) -> None:
        from explaunch.launch import fastlaunch

        streaming = self.compose is not None and fastlaunch.supports(self.launcher)
        queue = list(pending)
        while queue and not self.should_stop():
            if streaming:  # retries come back as the next round; jobs a dead worker kept from starting at once
                retries, queue = self.launch_stream(queue)
            else:
                retries = self.launch_batch(self.next_batch(queue))
            if retries:
                self.wait_backoff(max(self.settings.backoff_s * 2 ** (j.attempt - 1) for j in retries))
                queue = sorted(retries, key=lambda j: j.num) + queue

    def wait_backoff(self, seconds: float) -> None:
        log.info("retrying in %.1f s", seconds)
        end = time.monotonic() + seconds
        while time.monotonic() < end and not jobguard.stop_requested():
            time.sleep(min(0.2, end - time.monotonic()))

    def start_attempt(self, job: Job) -> None:
        job.attempt += 1
        try:
            archive_attempt(self.job_dir(job))
        except OSError as ex:
            self.cannot_write(f"job {job.num}'s earlier attempt to {ATTEMPTS_DIR}/", ex)
        if job not in self.ran:
            self.ran.append(job)

    def launch_stream(self, jobs: list[Job]) -> tuple[list[Job], list[Job]]:
        """Basic and joblib launchers: each job starts as soon as a worker is free, none waits for a batch's slowest
        job. Before handing out the next job the sweep asks ``should_stop()``; when it says stop, no new job is
        handed out, jobs handed out but still queued in a worker do not begin (the stop file, ``fastlaunch.Gate``)
        and the running ones finish. Returns the jobs to run again (retry, OOM fallback) after their backoff, and
        the jobs that did not start because a worker died (joblib then stops the whole pool), to go on with."""
        from explaunch.launch import fastlaunch

        assert self.progress is not None and self.compose is not None
        progress, compose = self.progress, self.compose
        started: list[Job] = []
        watcher = BatchWatcher(started, self.job_dir, self.note_record)  # it reads a job's record once it started

        def tasks() -> Iterator[fastlaunch.Task]:
            for job in jobs:  # joblib pulls these from its own thread as workers free up
                if self.should_stop():
                    return
                self.start_attempt(job)
                cfg = compose(job.overrides)
                planned = job.key if job.overrides == job.grid_overrides else self.job_key(cfg)
                progress.started(1)
                with watcher.lock:
                    started.append(job)
                    handed_out[job.num] = time.time()
                yield fastlaunch.Task(job.num, cfg, job.overrides, planned)

        handed_out: dict[int, float] = {}
        by_num = {job.num: job for job in jobs}
        stop_file = self.stop_file = self.sweep_dir / STOP_FILE
        stop_file.unlink(missing_ok=True)
        deadline = None if self.deadline is None else time.time() + self.deadline - time.monotonic()
        gate = fastlaunch.Gate(str(stop_file), deadline)

        def tell_queued_jobs() -> None:  # at the Ctrl-C itself: every job may already be handed out (none asks again)
            with contextlib.suppress(OSError):
                stop_file.touch()

        jobguard.add_stop_hook(tell_queued_jobs)

        returns: dict[int, Any] = {}
        declined: list[Job] = []
        lost_reason = None
        watcher.start()
        try:
            for num, job_return in fastlaunch.stream(self.launcher, tasks(), gate):
                if job_return is None:  # it waited in a worker's queue and the sweep stopped meanwhile
                    with watcher.lock:
                        declined.extend(j for j in started if j.num == num)
                    continue
                returns[num] = job_return
                self.record_returned(by_num[num], job_return, handed_out[num], watcher)
                watcher.poll()  # progress and ledger at once, not at the watcher's next tick
        except KeyboardInterrupt:
            self.stop_reason = "interrupted"
            lost_reason = ("JobInterrupted", "the sweep was interrupted while the job ran")
        except Exception as ex:  # a worker died: joblib gives up on the jobs in flight; record them, go on
            lost_reason = ("WorkerDied", f"{type(ex).__name__}: {ex}".splitlines()[0])
            self.check_disk_error(ex)
            if jobguard.stop_requested():
                lost_reason = ("JobInterrupted", f"the sweep was interrupted while the job ran ({lost_reason[1]})")
        finally:
            jobguard.remove_stop_hook(tell_queued_jobs)
            watcher.stop()
            self.stop_file = None
            stop_file.unlink(missing_ok=True)
        unstarted = list(declined)
        if lost_reason is not None:
            kept_out = [j for j in started if j not in declined and not self.began(j, handed_out[j.num])]
            # Some job began: a dead worker kept the others from starting, they go on. None began: the launch fails
            # as a job begins (the basic launcher, or every worker), and would again: they are recorded lost.
            if len(kept_out) < len(started) - len(declined):
                unstarted += kept_out
        for job in unstarted:  # handed to joblib but never run: not an attempt
            started.remove(job)
            job.attempt -= 1
            progress.started(-1)
        if unstarted and lost_reason is not None and self.stop_reason is None:
            log.warning("a worker died; %d job(s) it kept from starting go on in a new pool", len(unstarted))
        retries = self.settle(started, lambda job: lost_reason or lost_job_reason(returns.get(job.num)))
        rest = jobs[jobs.index(started[-1]) + 1 :] if started else jobs
        return retries, ([] if self.stop_reason else sorted(unstarted, key=lambda j: j.num)) + [
            j for j in rest if j not in unstarted and j.record is None and j.status is None
        ]

    def began(self, job: Job, handed_out: float) -> bool:
        """Whether the job ran after it was handed out: Hydra writes its ``.hydra/`` files first thing."""
        marker = self.job_dir(job) / ".hydra" / "overrides.yaml"
        try:
            return marker.stat().st_mtime >= handed_out - 0.01
        except OSError:
            return False

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

    def launch_batch(self, batch: list[Job]) -> list[Job]:
        """Run one batch (submitit: one job array); return the jobs to run again (retry, OOM fallback)."""
        for job in batch:
            self.start_attempt(job)
        overrides = [[*j.overrides, *self.limit_overrides()] for j in batch]
        assert self.progress is not None
        self.progress.started(len(batch))
        watcher = BatchWatcher(batch, self.job_dir, self.note_record)
        watcher.start()
        lost_reason = None
        returns: Sequence[Any] = []
        launched = time.time()
        try:
            returns = self.launch(overrides, batch[0].num)
        except KeyboardInterrupt:
            self.stop_reason = "interrupted"
            lost_reason = ("JobInterrupted", "the sweep was interrupted while the job ran")
        except Exception as ex:  # a worker died, the launcher gave up on the batch: record, go on
            lost_reason = ("WorkerDied", f"{type(ex).__name__}: {ex}".splitlines()[0])
            self.check_disk_error(ex)
            if jobguard.stop_requested():  # Ctrl-C reached the workers too (the terminal signals the whole group)
                lost_reason = ("JobInterrupted", f"the sweep was interrupted while the job ran ({lost_reason[1]})")
        finally:
            watcher.stop()
        by_num = {job.num: returns[i] for i, job in enumerate(batch) if i < len(returns)}
        for job in batch:
            if job.num in by_num:
                self.record_returned(job, by_num[job.num], launched, watcher)
        return self.settle(batch, lambda job: lost_reason or lost_job_reason(by_num.get(job.num)))

    def launch(self, overrides: list[list[str]], initial_job_idx: int) -> Sequence[Any]:
        returns: Sequence[Any] = self.launcher.launch(overrides, initial_job_idx=initial_job_idx)
        return returns

    def limit_overrides(self) -> list[str]:
        """The whole sweep's time limit caps each job's: a job started late gets only what is left."""
        if self.deadline is None:
            return []
        left = max(1.0, self.deadline - time.monotonic())
        limit = min(left, self.settings.job_timeout_s or math.inf)
        return [f"hydra.sweeper.job_timeout_s={limit:.1f}"]

    def note_record(self, job: Job) -> None:
        """A job's record appeared: ledger line and progress (called from the watcher thread too)."""
        record = job.record
        assert record is not None and self.progress is not None
        entry = LedgerEntry(
            key=job.key,
            job_num=job.num,
            overrides=job.grid_overrides,
            status=record.status,
            attempt=job.attempt,
            job_dir=str(self.job_dir(job).relative_to(self.sweep_dir)),
            time=now_iso(),
            duration_s=record.duration_s,
            details={
                "batch_size": job.batch_size,
                "launched_with": job.overrides,
                **({"program": self.program} if self.program else {}),
            },
        )
        try:
            self.ledger.append(entry)
        except OSError as ex:  # a full disk: the job's own record stands; a rerun runs it again
            self.cannot_write(f"job {job.num} in the ledger", ex)
        from explaunch.callbacks import deferred

        deferred.job_recorded(self.job_dir(job))  # the MLflow relay logs the job's run, when there is one
        final = record.status == records.COMPLETED or self.retry_plan(job) is None
        self.progress.finished(job, record, final)

    def retry_plan(self, job: Job) -> list[str] | None:
        """The overrides for another attempt, or None when the outcome is final."""
        record = job.record
        if record is None or record.error is None or record.status == records.COMPLETED:
            return None
        error = record.error
        names = {error.type, *error.bases}
        if names & NEVER_RETRIED or (record.status == records.TIMEOUT and "JobTimeout" not in self.settings.retry_on):
            return None
        is_oom = bool(names & OOM_TYPES) or "out of memory" in error.message.lower()
        size = job.batch_size if self.ours else None  # the batch knob is explaunch's schema
        if is_oom and self.settings.oom_fallback and size is not None and size > self.settings.min_batch_size:
            return with_batch(job.overrides, max(self.settings.min_batch_size, size // 2), job.cfg)
        if names & set(self.settings.retry_on) and job.attempt <= self.settings.max_retries:
            return list(job.overrides)
        return None

    def decide(self, job: Job) -> Job | None:
        record = job.record
        assert record is not None
        plan = self.retry_plan(job)
        if plan is None or self.stop_reason is not None:
            job.status = record.status
            return None
        if plan != job.overrides:
            log.warning("job %d ran out of memory at batch %s: retrying with %s", job.num, job.batch_size, plan)
            job.cfg = self.compose(plan)  # the planner's composer: shared compositions, Hydra's own fields
        else:
            log.warning(
                "job %d failed (%s): retry %d of %d", job.num, record.error, job.attempt, self.settings.max_retries
            )
        job.overrides = plan
        job.record = None
        return job

    def record_returned(self, job: Job, job_return: Any, launched: float, watcher: BatchWatcher) -> None:
        """Keep what the launcher returned for the job; where its task ran but the job wrote no record of its own
        (an app without explaunch's recording callback), write its record, built from that ``JobReturn``, as its
        ``job.json``: each job's record has one writer, the job where it records itself, else this parent."""
        if not isinstance(job_return, JobReturn):
            return
        self.job_returns[job.num] = job_return
        job_dir = self.job_dir(job)
        if not task_ran(job_return) or (job_dir / records.JOB_FILE).exists():
            return
        try:
            record = record_from_return(job, job_return, job_dir, self.job_key(job.cfg), launched)
            records.write_job_record(job_dir, record)
        except OSError as ex:  # no record in its folder: the job counts as lost (settle), a rerun runs it again
            self.cannot_write(f"job {job.num}'s record", ex)
            return
        watcher.take(job, record)

    def returns(self) -> list[list[JobReturn]]:
        """What Hydra's basic sweeper returns from ``sweep()``: the ``JobReturn`` of each job run now (of its last
        attempt), in job order, in batches of ``hydra.sweeper.max_batch_size`` jobs (one batch when unset)."""
        ran = [self.job_returns[j.num] for j in sorted(self.jobs, key=lambda j: j.index) if j.num in self.job_returns]
        size = self.settings.max_batch_size or max(1, len(ran))
        return [ran[i : i + size] for i in range(0, len(ran), size)]

    def record_lost(self, job: Job, error_type: str, message: str) -> records.JobRecord:
        """The record of a job that could not write its own (killed worker, interrupted batch)."""
        job_dir = self.job_dir(job)
        status = records.status_of_error(error_type, message)
        now = now_iso()
        record = records.JobRecord(
            status=status,
            overrides=job.overrides,
            config=resolved_config(job.cfg),
            config_hash=self.job_key(job.cfg),
            start_time=now,
            end_time=now,
            duration_s=0.0,
            job_num=job.num,
            error=records.JobError(type=error_type, message=message),
            info={"recorded_by": "sweep parent: the job left no record of its own"},
        )
        try:
            records.write_job_record(job_dir, record)
        except OSError as ex:  # reported in the summary from this record, and run again by a rerun
            self.cannot_write(f"job {job.num}'s record", ex)
        return record

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
        if self.stop_reason is None or self.stop_reason == "interrupted":
            self.stop_reason = f"cannot write {what}: {why(ex)}"
        self.should_stop()

    # ---- the end ---------------------------------------------------------------------------------------------
    def finish_records(self, jobs: list[Job]) -> None:
        """Each job run now that has earlier attempts (this run's or a previous run's, archived under attempts/<k>/)
        lists them in its job.json."""
        from explaunch.callbacks import deferred

        deferred.flush()  # the relay writes run ids into the records: it is done before they are rewritten here
        for job in jobs:
            path = self.job_dir(job)
            if job in self.ran and (path / ATTEMPTS_DIR).is_dir() and (path / records.JOB_FILE).exists():
                records.write_job_record(path, replace(records.read_job_record(path), attempts=earlier_attempts(path)))

    def print_summary(self, jobs: list[Job], not_run: list[Job], skipped: int) -> None:
        bad = [j for j in jobs if j.status not in (None, records.COMPLETED)]
        done = sum(1 for j in jobs if j.status == records.COMPLETED)
        lines = [
            f"sweep {self.sweep_dir}: {done} completed, {len(bad)} not completed, {skipped} skipped (done before), "
            f"{len(not_run)} not run"
        ]
        if self.stop_reason:
            lines.append(f"stopped early: {self.stop_reason}")
        if bad:
            from explaunch.redaction import redact_override

            common = set.intersection(*(set(j.overrides) for j in jobs))  # show what tells the jobs apart
            rows = []
            for job in bad:
                record = job.record
                error = record.error if record else None
                trace = self.job_dir(job) / error.traceback_file if error and error.traceback_file else None
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
        if not_run or bad:
            lines.append(f"to finish it: run the same command again with hydra.sweep.dir={self.sweep_dir}")
        if self.ours:
            from explaunch.tracking import sync as store_sync

            lines += store_sync.pending_runs_lines(self.sweep_dir, self.config)  # runs the store did not take
        print("\n".join(lines), file=sys.stderr)


def why(ex: OSError) -> str:
    """An OSError in a few words: ``No space left on device: /path``."""
    where = ex.filename if ex.filename is not None else ""
    return f"{ex.strerror or type(ex).__name__}{': ' + str(where) if where else ''}"


def lost_job_reason(job_return: Any) -> tuple[str, str]:
    """Why a job left no record, from what the launcher returned for it (a submitit error on SLURM)."""
    error = getattr(job_return, "_return_value", None)
    if not isinstance(error, BaseException):
        return ("WorkerDied", "the job left no record")
    text = str(error)
    first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    if isinstance(error, JobInterrupted):
        return ("JobInterrupted", first)
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
        return ("JobInterrupted", f"cancelled when the sweep was interrupted ({first})")
    if name == "CANCELLED":  # scancel by someone (not by this sweep): not retried
        return ("JobCancelled", f"SLURM cancelled the job (state: {full})")
    seen = f" (SLURM state {name})" if name and name not in first else ""
    return ("WorkerDied", f"{type(error).__name__}{seen}: {first}")


def program_fingerprint(task_function: Any) -> str | None:
    """A hash of the file holding the task function (its app's main script): what tells one program from another
    for :meth:`SweepRunner.runs_anew`; None where it cannot be read."""
    try:
        owner = task_function if inspect.isroutine(task_function) else type(task_function)
        source = inspect.getsourcefile(inspect.unwrap(owner))
        return hashlib.sha256(Path(source).read_bytes()).hexdigest()[:16] if source else None
    except (TypeError, OSError):
        return None


RECORDED_FROM_RETURN = "sweep parent: from the launcher's JobReturn (the job wrote no record of its own)"


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
    value = job_return._return_value  # the task's return value or exception: .return_value re-raises the latter
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


def with_batch(overrides: list[str], size: int, cfg: DictConfig) -> list[str]:
    """``overrides`` with the job's batch size set to ``size``: through ``batch`` when batching follows it."""
    key = "batch" if OmegaConf.select(cfg, "batch") == OmegaConf.select(cfg, "batching.batch_size") else None
    key = key or "batching.batch_size"
    kept = [o for o in overrides if o.lstrip("+").partition("=")[0] != key]
    return [*kept, f"{key}={size}"]


def earlier_attempts(job_dir: Path) -> list[dict[str, Any]]:
    """One summary per archived attempt, oldest first, read from ``attempts/<k>/record.json``."""
    found = []
    for folder in sorted((job_dir / ATTEMPTS_DIR).iterdir(), key=lambda p: int(p.name) if p.name.isdigit() else 0):
        try:
            record = records.read_job_record(folder / "record.json")
        except RecordError:
            continue
        found.append(
            {
                "attempt": int(folder.name) if folder.name.isdigit() else folder.name,
                "status": record.status,
                "overrides": record.overrides,
                "batch_size": record.config.get("batching", {}).get("batch_size"),
                "error_type": record.error.type if record.error else None,
                "error": record.error.message if record.error else None,
                "duration_s": record.duration_s,
                "files": f"{ATTEMPTS_DIR}/{folder.name}",
            }
        )
    return found


def archive_attempt(job_dir: Path) -> None:
    """Move what an earlier attempt left in ``job_dir`` to ``attempts/<k>/`` (its ``job.json`` as ``record.json``,
    so that only the latest attempt counts as the job's record)."""
    if not (job_dir / records.JOB_FILE).exists():
        return
    from explaunch.callbacks import deferred

    deferred.flush()  # the MLflow relay has logged that attempt (it reads and updates its record)
    previous = job_dir / ATTEMPTS_DIR
    k = 1
    while (previous / str(k)).exists():
        k += 1
    target = previous / str(k)
    target.mkdir(parents=True)
    for pattern in ATTEMPT_FILES:
        for path in job_dir.glob(pattern):
            name = "record.json" if path.name == records.JOB_FILE else path.name
            shutil.move(str(path), str(target / name))


def config_error_exit(ex: ExplaunchError) -> None:
    """One line on stderr, the error's exit code (a bad setting, a busy or unwritable sweep folder)."""
    print(f"error: {ex}", file=sys.stderr)
    raise SystemExit(ex.exit_code)
