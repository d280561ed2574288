"""Hydra callbacks: thin, they delegate to :mod:`explaunch.recording` and never fail a job themselves.

Registered in ``conf/hydra/explaunch.yaml``. ``on_job_*`` run inside the worker process, ``on_run_start`` and
``on_multirun_*`` in the parent. A worker may be reused for several jobs (joblib/loky): each job gets a fresh
:class:`~explaunch.recording.JobRecorder`.
"""

from __future__ import annotations

import logging
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from explaunch import records
from explaunch.errors import RecordError
from explaunch.redaction import install_log_redaction, redact_override

log = logging.getLogger(__name__)


class _Deferred:
    """What the sweep's parent has put off until a job is about to run (so that a resumed sweep with nothing left
    to do never opens the MLflow store), and the MLflow relay once started (explaunch.mlflow_relay)."""

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
    """``job.json`` (and an MLflow run) for every job, completed or failed; ``sweep.json`` at the end of a sweep."""

    def __init__(self) -> None:
        self.recorder: Any = None

    def __getstate__(self) -> dict[str, Any]:
        # submitit pickles the launcher, and with it the callbacks, to requeue a job: a running job's recorder
        # (threads, trackers) stays behind; the requeued job starts its own.
        return {**self.__dict__, "recorder": None}

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        install_log_redaction(config)
        if config.tracking.backend == "mlflow":
            from explaunch.tracking import MlflowTracker, resolve_uri

            tracker = MlflowTracker(resolve_uri(config.tracking.uri, Path.cwd()))
            tracker.experiment_id(config.tracking.experiment)  # creates the store before the job opens it

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        install_log_redaction(config)  # the launcher logs each job's overrides
        if config.tracking.backend != "mlflow":
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        command = shlex.join(redact_override(arg) for arg in sys.argv)
        uri = None if config.tracking.uri is None else str(config.tracking.uri)
        experiment, cwd = str(config.tracking.experiment), Path.cwd()

        relayed = _explaunch_sweeper(config) and relay_launcher(config) and not config.tracking.system_metrics

        def start() -> None:
            from explaunch.tracking import resolve_uri, start_sweep

            sweep_dir.mkdir(parents=True, exist_ok=True)
            tags = {"sweep_dir": str(sweep_dir.resolve()), "command": command}
            if relayed:
                from explaunch.mlflow_relay import MlflowRelay

                deferred.relay = MlflowRelay.start(resolve_uri(uri, cwd), experiment, sweep_dir, tags)
                log.info("MLflow: runs logged by the sweep's relay (log: %s/mlflow_relay.log)", sweep_dir)
                return
            sweep = start_sweep(resolve_uri(uri, cwd), experiment, sweep_dir, tags)
            log.info("MLflow: sweep run %s in %s", sweep.parent_run_id, sweep.tracking_uri)

        if _explaunch_sweeper(config):  # it starts the sweep run before its first job: none when all are done
            deferred.sweep_start = start
        else:
            start()

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        from explaunch.recording import JobRecorder, redact_hydra_output

        install_log_redaction(config)  # Hydra has just configured the job's logging (console, <job>.log)
        redact_hydra_output(config)
        self.recorder = JobRecorder(config).start()

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        recorder, self.recorder = self.recorder, None
        if recorder is None:  # on_job_start failed before it had a recorder: record the job all the same
            from explaunch.recording import JobRecorder

            recorder = JobRecorder(config)
            recorder.errors.append("on_job_start did not run to the end; no snapshot, energy or resources")
        record = recorder.finish(job_return)
        what = "run" if record.job_num is None else f"job {record.job_num}"  # a single run has no job number
        log.info("%s: %s (%.1f s) -> %s", what, record.status, record.duration_s, recorder.job_dir)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if _explaunch_sweeper(config):
            try:
                sweep = records.read_sweep_record(sweep_dir)  # explaunch's sweeper wrote it, with why it stopped
            except RecordError:  # it could not (a full disk): its summary said so
                sweep = records.summarize_sweep(sweep_dir)
        else:
            sweep = records.write_sweep_record(sweep_dir)
        log.info("sweep: %s -> %s", sweep.counts, sweep_dir / records.SWEEP_FILE)
        relay, deferred.relay = deferred.relay, None
        if relay is not None:  # it logs what is left and closes the sweep run
            relay.close()
        elif config.tracking.backend == "mlflow" and not deferred.sweep_start:  # the sweep run was started
            from explaunch.tracking import finish_sweep

            finish_sweep(sweep_dir, sweep)
        deferred.sweep_start = None
        if _explaunch_sweeper(config):  # its start reconciles the store with the folder, unless this says they agree
            from explaunch.store_sync import stamp_agreement

            stamp_agreement(config, sweep_dir)


def _explaunch_sweeper(config: DictConfig) -> bool:
    return str(config.hydra.sweeper._target_).endswith(".ExplaunchSweeper")


# Launchers whose jobs run on this machine while the sweep's process waits for them: the relay can log their runs.
RELAY_LAUNCHERS = frozenset(
    {
        "hydra._internal.core_plugins.basic_launcher.BasicLauncher",
        "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher",
    }
)


def relay_launcher(config: DictConfig) -> bool:
    return str(config.hydra.launcher._target_) in RELAY_LAUNCHERS


class JobGuardCallback(Callback):
    """Arms the job's time limit and turns Ctrl-C/SIGTERM into a recorded ``interrupted`` (see explaunch.jobguard).

    Listed after the recording callback: its limit starts when the task does and ends before the record is written.
    """

    def __init__(self) -> None:
        self.guard: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "guard": None}

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        from omegaconf import OmegaConf

        from explaunch.jobguard import JobGuard

        timeout = OmegaConf.select(config, "hydra.sweeper.job_timeout_s", default=None)
        self.guard = JobGuard(float(timeout) if timeout else None).arm()

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if self.guard is not None:
            self.guard.disarm()
            self.guard = None
