"""The sweep's plan: the grid as Hydra's basic sweeper expands it, every job composed and validated before any
starts, each job's identity (its ledger key), number and folder, what is left to run in this sweep folder, and
``plan.json`` for the dashboard."""

from __future__ import annotations

import hashlib
import inspect
import itertools
import logging
import os
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict

from explaunch.config import config_hash, is_explaunch_config, task_config_hash, validate
from explaunch.errors import RecordError
from explaunch.job.recording import now_iso
from explaunch.launch.settings import SWEEP_LOG, Job, SweeperSettings, why
from explaunch.sweepdir import records
from explaunch.sweepdir.ledger import Ledger, LedgerEntry

log = logging.getLogger(SWEEP_LOG)


class SweepPlan:
    """The jobs of one sweep folder: ``plan()`` gives them, ``job_dir()`` their folders, ``ledger`` their outcomes
    in this folder so far."""

    def __init__(
        self, settings: SweeperSettings, config_loader: Any, config: DictConfig, task_function: Any = None
    ) -> None:
        self.settings = settings
        self.loader = config_loader
        self.config = config
        self.ours = is_explaunch_config(config)  # explaunch's own app: its schema, store, energy meter, batch knob
        # another app's program, as its jobs' ledger lines name it (see runs_anew)
        self.program = None if self.ours else program_fingerprint(task_function)
        self.sweep_dir = Path(str(config.hydra.sweep.dir))
        self.ledger = Ledger(self.sweep_dir)
        self.compose: Any = None  # the planner's JobComposer: the launch composes retries from its cache
        self._job_dirs: dict[tuple[int, int, tuple[str, ...]], tuple[DictConfig, Path]] = {}
        # Jobs may share compositions only where nothing but the job number names a job's folder.
        sweep_settings = OmegaConf.to_container(config.hydra.sweep, resolve=False)
        self.fast_values = isinstance(sweep_settings, dict) and sweep_settings.get("subdir") == "${hydra.job.num}"

    def expand(self, arguments: Sequence[str], params: dict[str, str]) -> list[list[str]]:
        """The grid, exactly as Hydra's basic sweeper expands it (lists, range(), glob(), hydra.sweeper.params; a key
        given twice takes its last value; the product in the order keys first appear)."""
        parser = OverridesParser.create(config_loader=self.loader)
        parsed = parser.parse_overrides([*(f"{k}={v}" for k, v in params.items()), *arguments])
        axes: dict[str, list[str]] = {}
        for override in parsed:
            key = override.get_key_element()
            if not override.is_sweep_override():
                axes[key] = [f"{key}={override.get_value_element_as_str()}"]
            elif override.is_discrete_sweep():
                axes[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
            else:
                kind = override.value_type.name if override.value_type is not None else "unknown"
                raise HydraException(f"explaunch's sweeper does not support sweep type : {kind} (in {key})")
        return [list(point) for point in itertools.product(*axes.values())]

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
        if self.ours:  # the GPUs each job is given (the pre-flight checked those of an unswept command line only)
            from explaunch.launch.preflight import check_jobs_gpus

            check_jobs_gpus([job.cfg for job in jobs], OmegaConf.select(self.config, "hydra.launcher._target_"))
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
        if status is None or status in (records.INTERRUPTED, records.CANCELLED):
            return True
        if status == records.COMPLETED:
            return False
        return self.settings.rerun_failed

    def job_dir(self, job: Job) -> Path:
        """The job's folder (its number set in its config first, as Hydra's launchers do). Asked for several times
        a job (record, ledger, relay, summary) and ~0.5 ms each to resolve: kept per config, number and overrides."""
        key = (id(job.cfg), job.num, tuple(job.overrides))
        known = self._job_dirs.get(key)
        if known is not None and known[0] is job.cfg:
            return known[1]
        with open_dict(job.cfg):
            job.cfg.hydra.job.num = job.num
        try:
            subdir = str(OmegaConf.select(job.cfg, "hydra.sweep.subdir"))
        except Exception:  # an interpolation only a running job can resolve: Hydra's default layout
            subdir = str(job.num)
        self._job_dirs[key] = (job.cfg, self.sweep_dir / subdir)  # the config held: its id is not reused
        return self.sweep_dir / subdir

    def ledger_entry(self, job: Job, record: records.JobRecord, details: dict[str, Any]) -> LedgerEntry:
        """The ledger line of a job's attempt from its record (the one place it is built)."""
        return LedgerEntry(
            key=job.key,
            job_num=job.num,
            overrides=job.grid_overrides,
            status=record.status,
            attempt=job.attempt,
            job_dir=str(self.job_dir(job).relative_to(self.sweep_dir)),
            time=now_iso(),
            duration_s=record.duration_s,
            details=details,
        )

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
            entry = self.ledger_entry(job, record, {"launched_with": job.overrides, "recovered_from": records.JOB_FILE})
            try:
                self.ledger.append(entry)
            except OSError as ex:  # it runs again, as before
                log.warning("cannot write the ledger line of job %d: %s", job.num, why(ex))

    def write_plan(self, jobs: list[Job], pending: list[Job], parallelism: int) -> None:
        """``plan.json``: every job of the grid (those done before are ``skipped``), the parallelism and this
        process, so that a dashboard can tell pending from running jobs and whether the sweep still runs."""
        from explaunch.redaction import redact_override

        to_run = {id(job) for job in pending}
        plan = {
            "started": time.time(),
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "parallelism": parallelism,
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
        records.write_json_atomic(self.sweep_dir / records.PLAN_FILE, plan)


def program_fingerprint(task_function: Any) -> str | None:
    """A hash of the file holding the task function (its app's main script): what tells one program from another
    for :meth:`SweepPlan.runs_anew`; None where it cannot be read."""
    try:
        owner = task_function if inspect.isroutine(task_function) else type(task_function)
        source = inspect.getsourcefile(inspect.unwrap(owner))
        return hashlib.sha256(Path(source).read_bytes()).hexdigest()[:16] if source else None
    except (TypeError, OSError):
        return None
