"""Detached sweeps: ``python main.py -m ... hydra.sweeper.detach=true`` checks the sweep, starts its controller and
returns; ``explaunch status``, ``attach`` and ``cancel`` find the controller again from the sweep folder
(``controller.json``: :mod:`explaunch.launch.controller_state`).

The controller is the same command run again with ``hydra.sweeper.detach=false hydra.sweep.dir=<the folder>``
appended (Hydra takes the last value of a key), so a detached sweep runs the ordinary sweep loop: retries, ledger,
MLflow, resume. Where it runs:

- explaunch_local, basic, joblib, submitit_local: a background process in a session of its own (so a closed
  terminal or a Ctrl-C there does not reach it), stdin from /dev/null, stdout and stderr appended to
  ``<sweep>/controller.log``;
- submitit_slurm: a small SLURM job of its own (``sbatch``, one task, one CPU), whose log is the same file. The
  command reaches the job through its environment (``EXPLAUNCH_CONTROLLER_ARGV``), never through a file, and the
  job runs it through :func:`main`, which first drops the controller's own ``SLURM_*`` variables so that the job
  arrays it submits are not shaped by its allocation.

The detaching process writes ``controller.json`` once the controller is started; every start of the sweep loop
(:class:`SweepRun`) updates it when it begins and when it ends. The next start of a sweep removes its cancel marker
(``.cancel``, written by ``explaunch cancel``).

This module is imported by the ``explaunch`` commands: it imports nothing heavy at its top.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import socket
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from explaunch.errors import ConfigError, ExplaunchError, FolderNotWritable, SweepFolderBusy
from explaunch.launch.controller_state import (
    CANCELLED,
    CONTROLLER_LOG,
    FINISHED,
    INTERRUPTED,
    LIVE,
    QUEUED,
    SLURM,
    Controller,
    controller_state,
    now_iso,
    process_start,
)
from explaunch.launch.jobguard import CANCEL_FILE, guard_start, unguard_start, watch_sweep
from explaunch.redaction import redact_override

# Set in the controller's environment: the sweep folder it runs (it then keeps controller.json up to date).
CONTROLLER_VARIABLE = "EXPLAUNCH_CONTROLLER"
ARGV_VARIABLE = "EXPLAUNCH_CONTROLLER_ARGV"  # SLURM: the controller's command, handed over in its job's environment
SLURM_JOB_VARIABLE = "EXPLAUNCH_CONTROLLER_SLURM_JOB_ID"  # SLURM: the controller's own job id, kept for it
KEPT_SLURM_VARIABLES = frozenset({"SLURM_CONF"})  # where the cluster's configuration is: the controller needs it

# hydra.launcher._target_ -> the launcher's name, for the launchers a sweep can be detached from
DETACHABLE = {
    "hydra_plugins.explaunch_plugins.local_launcher.ExplaunchLocalLauncher": "explaunch_local",
    "hydra._internal.core_plugins.basic_launcher.BasicLauncher": "basic",
    "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher": "joblib",
    "hydra_plugins.explaunch_plugins.launchers.ExplaunchLocalLauncher": "submitit_local",
    "hydra_plugins.explaunch_plugins.launchers.ExplaunchSlurmLauncher": "submitit_slurm",
    "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher": "submitit_local",
    "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher": "submitit_slurm",
}
EXIT_INTERRUPTED = 130


# ---- python main.py -m ... hydra.sweeper.detach=true ---------------------------------------------------------
def launcher_name(config: Any) -> str | None:
    """The launcher's name when a sweep can be detached from it, else None."""
    from omegaconf import OmegaConf

    return DETACHABLE.get(str(OmegaConf.select(config, "hydra.launcher._target_", default="")))


def check_detachable(config: Any) -> None:
    """``hydra.sweeper.detach=true`` needs a launcher whose controller explaunch knows how to start."""
    from omegaconf import OmegaConf

    if not OmegaConf.select(config, "hydra.sweeper.detach", default=False) or launcher_name(config) is not None:
        return
    target = OmegaConf.select(config, "hydra.launcher._target_", default=None)
    raise ConfigError(
        "hydra.sweeper.detach",
        True,
        f"the launcher {target} cannot run a detached sweep; detach works with hydra/launcher=explaunch_local, "
        "basic, joblib, submitit_local and submitit_slurm",
    )


def hydra_value(text: str) -> str:
    """``text`` as a value on Hydra's command line: quoted where Hydra's grammar would read more into it (a comma
    would make it a sweep)."""
    if re.fullmatch(r"[A-Za-z0-9_/.+@%~-]+", text):
        return text
    return "'" + text.replace("'", "\\'") + "'"


def controller_command(sweep_dir: Path, argv: Sequence[str] | None = None) -> list[str]:
    """This process's command line (interpreter options and ``-m module`` included) run again as the controller:
    not detached, into ``sweep_dir``."""
    given = list(sys.orig_argv[1:] if argv is None else argv)
    return [sys.executable, *given, "hydra.sweeper.detach=false", f"hydra.sweep.dir={hydra_value(str(sweep_dir))}"]


def redacted(command: Sequence[str]) -> list[str]:
    return [redact_override(arg) for arg in command]


def detach(planner: Any, arguments: Sequence[str], params: dict[str, str], config: Any, *, ours: bool) -> Controller:
    """Check the sweep as its controller will (every job composed and validated by ``planner``, the sweep's
    :class:`~explaunch.launch.plan.SweepPlan`; the MLflow store of explaunch's own app, ``ours``; the folder free),
    start the controller, write ``controller.json`` and say where the sweep is. Raises an
    :class:`~explaunch.errors.ExplaunchError` (one line) before anything is started."""
    check_detachable(config)
    launcher = launcher_name(config)
    assert launcher is not None
    sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
    jobs = planner.plan(planner.expand(arguments, params))  # a bad job stops here, as it would stop the sweep
    if ours:
        from explaunch.tracking import sync as store_sync

        store_sync.check_before_sweep(config)  # a store that cannot be written: one line, exit 2
    claim_folder(sweep_dir)
    command = controller_command(sweep_dir)
    started = now_iso()
    if launcher == SLURM:
        job_id = submit_controller(sweep_dir, command, config)
        controller = Controller(
            None, None, started, redacted(command), str(Path.cwd()), launcher, job_id, QUEUED, jobs=len(jobs)
        )
    else:
        pid = spawn_controller(sweep_dir, command)
        controller = Controller(
            pid,
            socket.gethostname(),
            started,
            redacted(command),
            str(Path.cwd()),
            launcher,
            jobs=len(jobs),
            pid_start=process_start(pid),
        )
    controller.write(sweep_dir)
    print(announcement(sweep_dir, controller, dashboard_line(sweep_dir, config)), flush=True)
    return controller


def dashboard_line(sweep_dir: Path, config: Any) -> str | None:
    """For a sweep asked to serve its dashboard, the command that serves it: its controller does not (its output
    goes to a file, where the dashboard's token would be written)."""
    from omegaconf import OmegaConf

    from explaunch.review.dashboard.server import dashboard_command

    if not OmegaConf.select(config, "hydra.sweeper.dashboard", default=False):
        return None
    return dashboard_command(sweep_dir, OmegaConf.select(config, "hydra.sweeper.dashboard_port", default=None))


def claim_folder(sweep_dir: Path) -> None:
    """The sweep folder exists and no other sweep holds it (nor a controller still starting there)."""
    from explaunch.launch.sweeplock import SweepLock

    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        with SweepLock(sweep_dir):
            pass
    except OSError as ex:
        raise FolderNotWritable(f"sweep folder {sweep_dir} cannot be created or written: {ex.strerror}") from None
    earlier = Controller.read(sweep_dir)
    if earlier is not None:
        seen = controller_state(sweep_dir, earlier)
        if seen.state in LIVE:
            raise SweepFolderBusy(f"sweep folder {sweep_dir} has a controller running ({seen.detail})")


def controller_environment(sweep_dir: Path) -> dict[str, str]:
    return {**os.environ, CONTROLLER_VARIABLE: str(sweep_dir), "PYTHONUNBUFFERED": "1"}


def spawn_controller(sweep_dir: Path, command: list[str]) -> int:
    """The controller as a background process in a session of its own; its pid."""
    with (sweep_dir / CONTROLLER_LOG).open("ab") as log_file:
        process = subprocess.Popen(
            command,
            cwd=str(Path.cwd()),
            env=controller_environment(sweep_dir),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    process.returncode = 0  # not ours to wait for: it outlives this process (and no "still running" warning)
    return process.pid


def sbatch_options(config: Any) -> list[str]:
    """Where the controller's job goes: the sweep's partition, account and QOS when it names them."""
    from omegaconf import OmegaConf

    options = []
    for key in ("partition", "account", "qos"):
        value = OmegaConf.select(config, f"hydra.launcher.{key}", default=None)
        if value:
            options.append(f"--{key}={value}")
    hours = OmegaConf.select(config, "hydra.sweeper.max_duration_h", default=None)
    if hours:  # the sweep stops launching then; its last jobs may run for their own limit after that
        job_min = OmegaConf.select(config, "hydra.launcher.timeout_min", default=None) or 60
        options.append(f"--time={int(float(hours) * 60 + float(job_min) + 10)}")
    return options


def submit_controller(sweep_dir: Path, command: list[str], config: Any) -> str:
    """The controller as a SLURM job of its own; its job id."""
    env = {**controller_environment(sweep_dir), ARGV_VARIABLE: json.dumps(command)}
    sbatch = [
        "sbatch",
        "--parsable",
        f"--job-name=explaunch-controller-{sweep_dir.name}",
        f"--output={sweep_dir / CONTROLLER_LOG}",
        "--open-mode=append",
        f"--chdir={Path.cwd()}",
        "--ntasks=1",
        "--cpus-per-task=1",
        *sbatch_options(config),
        f"--wrap=exec {shlex.quote(sys.executable)} -m explaunch.launch.controller",
    ]
    try:
        done = subprocess.run(sbatch, env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as ex:
        raise ExplaunchError(f"cannot submit the sweep's controller with sbatch: {ex}") from None
    job_id = done.stdout.strip().split(";")[0]
    if done.returncode != 0 or not job_id:
        why = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        raise ExplaunchError(f"sbatch refused the sweep's controller: {why}")
    return job_id


def announcement(sweep_dir: Path, controller: Controller, dashboard: str | None = None) -> str:
    """What a detach prints: where the sweep runs and the commands that follow it (``dashboard``: the one that serves
    its dashboard, see :func:`dashboard_line`)."""
    where = (
        f"SLURM job {controller.slurm_job_id}"
        if controller.slurm_job_id
        else f"pid {controller.pid} on {controller.host}"
    )
    folder = shlex.quote(str(sweep_dir))
    return "\n".join(
        [
            f"sweep detached: {controller.jobs} jobs in {sweep_dir}",
            f"controller: {where} ({controller.launcher}), log {sweep_dir / CONTROLLER_LOG}",
            f"  explaunch status {folder}",
            f"  explaunch attach {folder}",
            f"  explaunch cancel {folder}",
            *([f"  {dashboard}"] if dashboard else []),
        ]
    )


def main() -> None:
    """The controller's SLURM job: its command from the environment, without the job's own ``SLURM_*`` variables."""
    command = json.loads(os.environ[ARGV_VARIABLE])
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") or k in KEPT_SLURM_VARIABLES}
    env.pop(ARGV_VARIABLE, None)
    if os.environ.get("SLURM_JOB_ID"):
        env[SLURM_JOB_VARIABLE] = os.environ["SLURM_JOB_ID"]
    os.execve(command[0], command, env)


# ---- every sweep's start and end (the plugin's sweep()) -------------------------------------------------------
@dataclass
class SweepRun:
    """One run of the sweep loop in a folder. It names the folder to its jobs (jobguard: the cancel marker) and,
    when no other sweep holds the folder, clears a cancel that is over and, where the folder has a controller (it
    was detached) or this process was started as its controller, becomes the folder's controller in
    ``controller.json`` (a sweep rerun in a terminal, a takeover by ``explaunch attach``), until it ends."""

    sweep_dir: Path
    controller: Controller | None = None
    signals: Any = None  # the SIGINT handler before this run's (jobguard.guard_start)

    @classmethod
    def begin(cls, sweep_dir: Path, launcher: str | None) -> SweepRun:
        sweep_dir = sweep_dir.absolute()
        watch_sweep(sweep_dir)
        run = cls(sweep_dir, signals=guard_start())
        if not folder_free(sweep_dir):  # the sweep that holds it is refused by the lock in a moment
            return run
        (sweep_dir / CANCEL_FILE).unlink(missing_ok=True)
        earlier = Controller.read(sweep_dir)
        if not is_controller(sweep_dir) and earlier is None:
            return run
        keep = earlier is not None and is_controller(sweep_dir)  # started by detach or attach: its command as given
        run.controller = Controller(
            pid=os.getpid(),
            host=socket.gethostname(),
            started=now_iso(),
            command=earlier.command if keep and earlier else redacted(controller_command(sweep_dir)),
            cwd=str(Path.cwd()),
            launcher=launcher or (earlier.launcher if earlier else "unknown"),
            slurm_job_id=os.environ.get(SLURM_JOB_VARIABLE) or None,
            jobs=earlier.jobs if earlier else None,
            pid_start=process_start(os.getpid()),
        )
        with contextlib.suppress(OSError):
            run.controller.write(sweep_dir)
        return run

    def end(self, code: int) -> None:
        unguard_start(self.signals)
        if self.controller is None:
            return
        if (self.sweep_dir / CANCEL_FILE).exists():
            state = CANCELLED
        else:
            state = INTERRUPTED if code == EXIT_INTERRUPTED else FINISHED
        ended = replace(self.controller, state=state, exit_code=code, ended=now_iso())
        with contextlib.suppress(OSError):
            ended.write(self.sweep_dir)


def is_controller(sweep_dir: Path) -> bool:
    named = os.environ.get(CONTROLLER_VARIABLE)
    return named is not None and Path(named).absolute() == sweep_dir.absolute()


def folder_free(sweep_dir: Path) -> bool:
    """Whether no sweep holds ``sweep_dir`` now (a folder not made yet is free); a folder that cannot be locked or
    written is not: the sweep says why in a moment."""
    if not sweep_dir.is_dir():
        return False
    from explaunch.launch.sweeplock import SweepLock

    try:
        with SweepLock(sweep_dir):
            return True
    except (SweepFolderBusy, OSError):
        return False


if __name__ == "__main__":
    main()
