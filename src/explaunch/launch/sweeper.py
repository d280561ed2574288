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

The sweeper's modules, in the order they import one another (none imports one later in the list):

- :mod:`~explaunch.launch.settings`: settings, jobs, constants.
- :mod:`~explaunch.launch.policy`: pure decisions: run a job again (when, with what batch) or not; stop the sweep.
- :mod:`~explaunch.launch.attempts`: a job's earlier attempts (archived, listed), the overrides of its next one.
- :mod:`~explaunch.launch.lost`: the record the sweep writes for a job that wrote none.
- :mod:`~explaunch.launch.progress`: the progress line and the watcher that reads records as jobs write them.
- :mod:`~explaunch.launch.summary`: the end: the records' attempt lists, the summary on stderr.
- :mod:`~explaunch.launch.plan`: the grid, the jobs' keys, numbers and folders, what is left to run, ``plan.json``.
- :mod:`~explaunch.launch.outcomes`: what follows a job's attempt: ledger, progress, retry or not, stop or not.
- :mod:`~explaunch.launch.launching`: the launch loop: streaming (basic, joblib) or in batches (submitit).
- :mod:`~explaunch.launch.sweeper` (this): :class:`SweepRunner`, one sweep from end to end.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Any

from hydra.core.utils import JobReturn
from omegaconf import DictConfig, OmegaConf

from explaunch import _compat
from explaunch.errors import ExplaunchError, FolderNotWritable
from explaunch.launch import jobguard
from explaunch.launch.controls import SweepControls
from explaunch.launch.launching import LaunchLoop
from explaunch.launch.order import group_key, order_jobs
from explaunch.launch.outcomes import Outcomes
from explaunch.launch.plan import SweepPlan
from explaunch.launch.progress import Progress
from explaunch.launch.settings import EXIT_INTERRUPTED, SWEEP_LOG, Job, SweeperSettings, batch_size, why
from explaunch.launch.summary import finish_records, print_summary
from explaunch.launch.sweeplock import SweepLock
from explaunch.sweepdir import records
from explaunch.sweepdir.ledger import Ledger

log = logging.getLogger(SWEEP_LOG)


class SweepRunner:
    """One sweep from end to end: plan (:class:`~explaunch.launch.plan.SweepPlan`), lock the folder, launch
    (:class:`~explaunch.launch.launching.LaunchLoop`), keep the account (:class:`~explaunch.launch.outcomes.Outcomes`),
    summarize (:mod:`explaunch.launch.summary`)."""

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
        self.config = config
        self.plan = SweepPlan(settings, config_loader, config, task_function)
        self.ours = self.plan.ours  # explaunch's own app: its schema, store, energy meter, batch knob
        self.sweep_dir = self.plan.sweep_dir
        self.outcomes = Outcomes(settings, self.plan)
        self.jobs: list[Job] = []  # the grid, once planned

    def run(self, arguments: Sequence[str], params: dict[str, str]) -> int:
        if self.ours and self.config.energy.enabled and self.jobs_run_here():
            from explaunch.measure import meter

            meter.prestart()  # the jobs' energy meter probes the hardware while the sweep is planned
        plan = self.plan
        grid = plan.expand(arguments, params)
        jobs = self.jobs = plan.plan(grid)  # a bad job stops the sweep here, before anything is written
        # the MLflow store: writable, not deleted, agreeing with the job folders
        from explaunch.tracking import sync as store_sync

        # a dead store stops the sweep before its folder; another app's jobs log nothing to explaunch's store
        store_ok = store_sync.check_before_sweep(self.config) if self.ours else False
        lock = self.lock_folder()
        try:
            fresh = Ledger(self.sweep_dir)
            if fresh.latest != plan.ledger.latest:  # a sweep ended here between our planning and our lock
                plan.ledger = fresh
                jobs = self.jobs = plan.plan(grid)
            plan.adopt_unledgered(jobs)
            if self.ours:  # under the lock: it reconciles the store with this folder's jobs, no other sweep's now
                store_sync.reconcile_before_sweep(self.config, self.sweep_dir, store_ok)
            return self.run_jobs(jobs)
        finally:
            lock.release()

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
            anew = self.plan.runs_anew(jobs)
            pending = sorted((j for j in jobs if anew or self.plan.to_run(j)), key=lambda j: j.num)
            skipped = len(jobs) - len(pending)
            controls = self.outcomes.controls = SweepControls(
                self.settings, self.sweep_dir, len(pending), local="slurm" not in type(self.launcher).__name__.lower()
            )
            if self.settings.order != "grid":  # the start order only: job numbers and folders stay the grid's
                pending, seed = order_jobs(
                    pending, self.settings.order, self.settings.order_seed, lambda j: group_key(j.grid_overrides)
                )
                controls.order["seed"] = seed
                log.info("jobs start in %s order%s", self.settings.order, f" (seed {seed})" if seed is not None else "")
            self.plan.write_plan(jobs, pending, self.batch_size())
        except OSError as ex:
            raise FolderNotWritable(f"sweep folder {self.sweep_dir} cannot be written: {why(ex)}") from None
        if anew:
            log.info("every job of this sweep completed before in %s: running them all again", self.sweep_dir)
        if skipped:
            log.info(
                "resuming %s: %d of %d jobs already done, %d to run", self.sweep_dir, skipped, len(jobs), len(pending)
            )
        dashboard = self.start_dashboard() if self.settings.dashboard else None
        outcomes = self.outcomes
        progress = outcomes.progress = Progress(len(jobs), skipped, self.settings.progress)
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
                LaunchLoop(self.settings, self.launcher, self.batch_size(), self.plan, outcomes).launch_all(pending)
            finally:
                progress.close()
                controls.close()
            signals.closing()  # a Ctrl-C from here on never cuts the records short
            _compat.end_joblib_workers(wait=False)  # joblib's idle workers end while the records are written
            not_run = [j for j in pending if j.status is None]
            try:
                finish_records(jobs, outcomes.ran, self.plan.job_dir)
                not_run_overrides = [j.overrides for j in not_run]
                records.write_sweep_record(self.sweep_dir, outcomes.stop_reason, not_run_overrides, controls.summary())
            except OSError as ex:  # the summary below still says what happened
                log.error("cannot write %s: %s", records.SWEEP_FILE, why(ex))
                outcomes.stop_reason = outcomes.stop_reason or f"cannot write {records.SWEEP_FILE}: {why(ex)}"
            store_config = self.config if self.ours else None
            print_summary(self.sweep_dir, jobs, not_run, skipped, outcomes.stop_reason, self.plan.job_dir, store_config)
        if dashboard is not None:
            dashboard.stop()
        statuses = [j.status or self.plan.ledger.status(j.key) for j in jobs if j not in not_run]
        reached = (outcomes.stop_reason or "").startswith("stop_when")  # the target was met: not_run is by design
        if (reached or not not_run) and all(status == records.COMPLETED for status in statuses):
            return 0
        interrupted = records.INTERRUPTED in statuses or outcomes.stop_reason in ("interrupted", "cancelled")
        return EXIT_INTERRUPTED if interrupted else 1

    def start_dashboard(self) -> Any:
        """The sweep's own dashboard, its URL (with its token) printed to the terminal. Where stderr is not a terminal
        (a detached sweep's controller.log, a redirect, a SLURM output file) the token would be written to a file,
        which others may read: no dashboard is started (none could be opened without its token), and the line says
        how to serve the sweep instead (``explaunch dashboard`` prints a token of its own where it runs)."""
        from explaunch.review.dashboard.server import dashboard_command, start_in_thread

        if not sys.stderr.isatty():
            command = dashboard_command(self.sweep_dir, self.settings.dashboard_port)
            why = "this output is not a terminal, and its token would be written to a file"
            print(f"dashboard: not started here ({why}); see the sweep with: {command}", file=sys.stderr, flush=True)
            return None
        dashboard = start_in_thread(self.sweep_dir, self.settings.dashboard_port, "hydra.sweeper.dashboard_port")
        print(f"dashboard: {dashboard.url} (while the sweep runs)", file=sys.stderr, flush=True)
        return dashboard

    def jobs_run_here(self) -> bool:
        """Whether the jobs run in this process: the basic launcher, or joblib with one worker (no joblib import)."""
        from explaunch.launch import fastlaunch

        return fastlaunch.runs_in_process(self.launcher)

    def batch_size(self) -> int:
        """How many jobs run at once."""
        return batch_size(self.settings, self.config.hydra.launcher)

    def returns(self) -> list[list[JobReturn]]:
        """What Hydra's basic sweeper returns from ``sweep()``: the ``JobReturn`` of each job run now (of its last
        attempt), in job order, in batches of ``hydra.sweeper.max_batch_size`` jobs (one batch when unset)."""
        returned = self.outcomes.job_returns
        ran = [returned[j.num] for j in sorted(self.jobs, key=lambda j: j.index) if j.num in returned]
        size = self.settings.max_batch_size or max(1, len(ran))
        return [ran[i : i + size] for i in range(0, len(ran), size)]


def config_error_exit(ex: ExplaunchError) -> None:
    """One line on stderr, the error's exit code (a bad setting, a busy or unwritable sweep folder)."""
    print(f"error: {ex}", file=sys.stderr)
    raise SystemExit(ex.exit_code)
