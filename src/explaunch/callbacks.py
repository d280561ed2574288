"""Hydra callbacks: thin, they delegate to :mod:`explaunch.job.recording` and never fail a job themselves.

Registered in ``conf/hydra/explaunch.yaml`` for explaunch's own app; any Hydra app adds them in its config::

    hydra:
      callbacks:
        recording:
          _target_: explaunch.callbacks.RecordingCallback
          experiment: my_app        # see explaunch.job.recording_settings.RecordingOptions for every argument
        job_guard:
          _target_: explaunch.callbacks.JobGuardCallback

In explaunch's own app the job config's keys (``tracking``, ``energy``, ``resources``) decide what is recorded, as
ever; in any other app the callbacks' arguments do. ``on_job_*`` run inside the worker process, ``on_run_start`` and
``on_multirun_*`` in the parent. A worker may be reused for several jobs (joblib/loky): each job gets a fresh
:class:`~explaunch.job.recording.JobRecorder`.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.utils import JobReturn
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from explaunch.errors import ConfigError, RecordError
from explaunch.job.efficiency import helper_pids
from explaunch.redaction import install_log_redaction, redact_override
from explaunch.sweepdir import records

if TYPE_CHECKING:
    from explaunch.job.recording_settings import RecordingSettings

log = logging.getLogger(__name__)


class _Deferred:
    """What the sweep's parent has put off until a job is about to run (so that a resumed sweep with nothing left
    to do never opens the MLflow store), and the MLflow relay once started (explaunch.tracking.relay)."""

    sweep_start: Callable[[], None] | None = None
    relay: Any = None

    def start_sweep(self) -> None:
        start, self.sweep_start = self.sweep_start, None
        if start is not None:
            start()

    def job_recorded(self, job_dir: Path) -> None:
        """The sweeper has read a job's record: the relay logs its run."""
        if self.relay is not None:
            self.relay.job_recorded(job_dir)

    def flush(self) -> None:
        """Wait until the relay has logged every record it was given (before a record is moved or rewritten)."""
        if self.relay is not None:
            self.relay.flush()


deferred = _Deferred()


class RecordingCallback(Callback):
    """``job.json`` (and an MLflow run) for every job, completed or failed; ``sweep.json`` at the end of a sweep.

    The arguments (:class:`explaunch.job.recording_settings.RecordingOptions`) say what any other app records; a value
    not allowed is a one-line :class:`~explaunch.errors.ConfigError` naming ``hydra.callbacks.recording.<argument>``.
    Other apps' jobs log their own MLflow runs (the sweep's relay logs only explaunch's app's)."""

    def __init__(
        self,
        tracking: str = "mlflow",
        tracking_uri: str | None = None,
        experiment: str | None = None,
        system_metrics: bool = False,
        log_artifacts: bool = True,
        energy: bool = True,
        country_iso_code: str = "USA",
        resources: bool = True,
        resources_interval_s: float = 1.0,
    ) -> None:
        from explaunch.job.recording_settings import RecordingOptions

        self.options = RecordingOptions(
            tracking=tracking,
            tracking_uri=tracking_uri,
            experiment=experiment,
            system_metrics=system_metrics,
            log_artifacts=log_artifacts,
            energy=energy,
            country_iso_code=country_iso_code,
            resources=resources,
            resources_interval_s=resources_interval_s,
        ).validated("hydra.callbacks.recording")
        self.recorder: Any = None
        self.sweep_pid: int | None = None  # the sweep's process, while its multirun.yaml may hold secrets

    def __getstate__(self) -> dict[str, Any]:
        # submitit pickles the launcher, and with it the callbacks, to requeue a job: a running job's recorder
        # (threads, trackers) stays behind; the requeued job starts its own.
        return {**self.__dict__, "recorder": None}

    def settings(self, config: DictConfig) -> RecordingSettings:
        """What this job or sweep records: explaunch's app's config says, else this callback's arguments."""
        from explaunch.job.recording_settings import RecordingSettings

        return RecordingSettings.of_job(config, self.options)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        install_log_redaction(config)
        tracking = self.settings(config).tracking
        if tracking.backend == "mlflow":
            from explaunch.tracking.store import resolve_uri
            from explaunch.tracking.writer import MlflowTracker

            tracker = MlflowTracker(resolve_uri(tracking.uri, Path.cwd()))
            tracker.experiment_id(tracking.experiment)  # creates the store before the job opens it

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        install_log_redaction(config)  # the launcher logs each job's overrides
        if not _explaunch_sweeper(config):  # another sweeper writes multirun.yaml as given, once this has returned
            self.sweep_pid = os.getpid()
        settings = self.settings(config)
        tracking = settings.tracking
        if tracking.backend != "mlflow":
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        command = shlex.join(redact_override(arg) for arg in sys.argv)
        uri = None if tracking.uri is None else str(tracking.uri)
        experiment, cwd = str(tracking.experiment), Path.cwd()

        # the relay logs the runs of explaunch's app only: its store is reconciled with the folder at each sweep's
        # start (explaunch.tracking.sync) should the relay miss one; another app's job logs its own run
        relayed = (
            settings.own_app and _explaunch_sweeper(config) and relay_launcher(config) and not tracking.system_metrics
        )

        def start() -> None:
            from explaunch.tracking.store import resolve_uri
            from explaunch.tracking.sweeprun import start_sweep

            sweep_dir.mkdir(parents=True, exist_ok=True)
            tags = {"sweep_dir": str(sweep_dir.resolve()), "command": command}
            if relayed:
                from explaunch.tracking.relay import MlflowRelay

                deferred.relay = MlflowRelay.start(resolve_uri(uri, cwd), experiment, sweep_dir, tags)
                helper_pids.add(deferred.relay.proc.pid)  # no part of a job run by this process (basic launcher)
                log.info("MLflow: runs logged by the sweep's relay (log: %s/mlflow_relay.log)", sweep_dir)
                return
            sweep = start_sweep(resolve_uri(uri, cwd), experiment, sweep_dir, tags)
            log.info("MLflow: sweep run %s in %s", sweep.parent_run_id, sweep.tracking_uri)

        if _explaunch_sweeper(config):  # it starts the sweep run before its first job: none when all are done
            deferred.sweep_start = start
        else:
            start()

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        from explaunch.job.hydra_files import redact_hydra_output
        from explaunch.job.recording import JobRecorder

        install_log_redaction(config)  # Hydra has just configured the job's logging (console, <job>.log)
        redact_hydra_output(config)
        if self.sweep_pid == os.getpid():  # a job run by the sweep's process (basic launcher): its first one
            self._redact_sweep_config(config)
        self.recorder = JobRecorder(config, self.settings(config)).start()

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        recorder, self.recorder = self.recorder, None
        if recorder is None:  # on_job_start failed before it had a recorder: record the job all the same
            from explaunch.job.recording import JobRecorder

            recorder = JobRecorder(config, self.settings(config))
            recorder.errors.append("on_job_start did not run to the end; no snapshot, energy or resources")
        record = recorder.finish(job_return)
        what = "run" if record.job_num is None else f"job {record.job_num}"  # a single run has no job number
        log.info("%s: %s (%.1f s) -> %s", what, record.status, record.duration_s, recorder.job_dir)

    def _redact_sweep_config(self, config: DictConfig) -> None:
        from explaunch.job.hydra_files import SWEEP_CONFIG_FILE, redact_sweep_config

        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            if redact_sweep_config(sweep_dir):
                self.sweep_pid = None
        except Exception as ex:  # the jobs run; what could not be redacted is removed rather than left
            log.warning("could not redact %s: %s: %s; removing it", SWEEP_CONFIG_FILE, type(ex).__name__, ex)
            (sweep_dir / SWEEP_CONFIG_FILE).unlink(missing_ok=True)
            self.sweep_pid = None

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if _explaunch_sweeper(config):
            try:
                sweep = records.read_sweep_record(sweep_dir)  # explaunch's sweeper wrote it, with why it stopped
            except RecordError:  # it could not (a full disk): its summary said so
                sweep = records.summarize_sweep(sweep_dir)
        else:
            self._redact_sweep_config(config)  # before the sweep run uploads it
            sweep = records.write_sweep_record(sweep_dir)
        log.info("sweep: %s -> %s", sweep.counts, sweep_dir / records.SWEEP_FILE)
        relay, deferred.relay = deferred.relay, None
        settings = self.settings(config)
        if relay is not None:  # it logs what is left and closes the sweep run
            relay.close()
            helper_pids.discard(relay.proc.pid)
        elif settings.tracking.backend == "mlflow" and not deferred.sweep_start:  # the sweep run was started
            from explaunch.tracking.sweeprun import finish_sweep

            finish_sweep(sweep_dir, sweep)
        deferred.sweep_start = None
        # explaunch's sweeper reconciles its app's store with the folder at its start, unless this says they agree
        if settings.own_app and _explaunch_sweeper(config):
            from explaunch.tracking.sync import stamp_agreement

            stamp_agreement(config, sweep_dir)


def _explaunch_sweeper(config: DictConfig) -> bool:
    return str(config.hydra.sweeper._target_).endswith(".ExplaunchSweeper")


# Launchers whose jobs run on this machine while the sweep's process waits for them: the relay can log their runs.
RELAY_LAUNCHERS = frozenset(
    {
        "hydra._internal.core_plugins.basic_launcher.BasicLauncher",
        "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher",
        "hydra_plugins.explaunch_plugins.local_launcher.ExplaunchLocalLauncher",
    }
)


def relay_launcher(config: DictConfig) -> bool:
    return str(config.hydra.launcher._target_) in RELAY_LAUNCHERS


class JobGuardCallback(Callback):
    """Arms the job's time limit and turns Ctrl-C/SIGTERM into a recorded ``interrupted``
    (see explaunch.launch.jobguard).

    Listed after the recording callback: its limit starts when the task does and ends before the record is written.
    The limit is ``hydra.sweeper.job_timeout_s`` where explaunch's sweeper sets one, else ``job_timeout_s`` (seconds,
    null: none), for a sweeper without that setting.
    """

    def __init__(self, job_timeout_s: float | None = None) -> None:
        number = isinstance(job_timeout_s, int | float) and not isinstance(job_timeout_s, bool)
        if job_timeout_s is not None and not (number and 0 < job_timeout_s < float("inf")):
            raise ConfigError(
                "hydra.callbacks.job_guard.job_timeout_s", job_timeout_s, "must be a number > 0, or null for no limit"
            )
        self.job_timeout_s = job_timeout_s
        self.guard: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "guard": None}

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        from explaunch.launch.jobguard import JobGuard

        timeout = OmegaConf.select(config, "hydra.sweeper.job_timeout_s", default=None) or self.job_timeout_s
        self.guard = JobGuard(float(timeout) if timeout else None).arm()

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if self.guard is not None:
            self.guard.disarm()
            self.guard = None
