"""Detached sweeps: ``python main.py -m ... hydra.sweeper.detach=true`` checks the sweep, starts its controller and
returns; ``explaunch status``, ``attach`` and ``cancel`` find the controller again from the sweep folder.

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

``<sweep>/controller.json`` says where the controller is: pid and host, or the SLURM job id, its command with secrets
redacted (:mod:`explaunch.redaction`), the launcher, and its state. The detaching process writes it once the
controller is started; the controller itself updates it when it begins (its pid and host, which only it knows on
SLURM) and when it ends (``finished``; ``cancelled`` by ``explaunch cancel``; ``interrupted`` by a signal from
elsewhere: SIGTERM, ``scancel``, a time limit), with its exit code. A controller that ended without saying so was
killed (``kill -9``, a lost node): it is ``gone``. ``explaunch attach`` takes over a sweep whose controller is gone or
was interrupted.

``explaunch cancel`` writes ``<sweep>/.cancel`` (:data:`explaunch.launch.jobguard.CANCEL_FILE`) before it signals the
sweep; the next start of the sweep removes it (:func:`begin_run`).

This module is imported by the ``explaunch`` commands: it imports nothing heavy at its top.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from explaunch.errors import ConfigError, ExplaunchError, FolderNotWritable, SweepFolderBusy
from explaunch.launch.jobguard import CANCEL_FILE as CANCEL_FILE
from explaunch.launch.jobguard import guard_start, unguard_start, watch_sweep
from explaunch.redaction import REDACTED, redact_override

CONTROLLER_FILE = "controller.json"
CONTROLLER_LOG = "controller.log"
STOP_FILE = ".stop"  # explaunch.launch.sweeper's stop file: jobs queued in a worker see it and do not begin
CONTROLLER_SCHEMA_VERSION = 1
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
SLURM = "submitit_slurm"

# controller states, as controller.json holds them (written) and as explaunch status derives them (seen)
QUEUED, RUNNING, FINISHED, CANCELLED = "queued", "running", "finished", "cancelled"
INTERRUPTED = "interrupted"  # ended by a signal from outside (SIGTERM, a SLURM time limit, scancel): resumable
CANCELLING, GONE, UNKNOWN, NONE = "cancelling", "gone", "unknown", "none"
ENDED = frozenset({FINISHED, CANCELLED, INTERRUPTED})
UNFINISHED = frozenset({GONE, INTERRUPTED})  # the sweep's controller ended before the sweep: attach takes it over
EXIT_INTERRUPTED = 130
LIVE = frozenset({QUEUED, RUNNING, CANCELLING})
SLURM_LIVE_STATES = {"PENDING": QUEUED, "CONFIGURING": RUNNING, "RUNNING": RUNNING, "COMPLETING": RUNNING}
SLURM_TIMEOUT_S = 10.0


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Controller:
    """``controller.json``: where a detached sweep's controller runs and what became of it."""

    pid: int | None
    host: str | None
    started: str
    command: list[str]  # secrets redacted
    cwd: str
    launcher: str
    slurm_job_id: str | None = None
    state: str = RUNNING
    exit_code: int | None = None
    ended: str | None = None
    jobs: int | None = None  # the jobs of the grid, known before the controller writes plan.json
    pid_start: str | None = None  # when the process began (Linux: /proc/<pid>/stat), so a reused pid is not it
    schema_version: int = CONTROLLER_SCHEMA_VERSION

    def write(self, sweep_dir: Path) -> None:
        from explaunch.sweepdir.records import write_json_atomic

        write_json_atomic(sweep_dir / CONTROLLER_FILE, asdict(self))

    @classmethod
    def read(cls, sweep_dir: Path) -> Controller | None:
        """The sweep's controller, or None when the sweep was never detached (or the file is unreadable)."""
        try:
            data = json.loads((sweep_dir / CONTROLLER_FILE).read_text(encoding="utf-8"))
            known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
            return cls(**known)
        except (OSError, ValueError, TypeError):
            return None


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
    print(announcement(sweep_dir, controller), flush=True)
    return controller


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
        f"--wrap=exec {shlex.quote(sys.executable)} -m explaunch.launch.detach",
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


def announcement(sweep_dir: Path, controller: Controller) -> str:
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


# ---- what became of the controller ---------------------------------------------------------------------------
@dataclass(frozen=True)
class SeenState:
    state: str  # queued, running, cancelling, finished, cancelled, gone, unknown, none
    detail: str
    controller: Controller | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def live(self) -> bool:
        return self.state in LIVE


def controller_state(sweep_dir: Path, controller: Controller | None, plan: dict[str, Any] | None = None) -> SeenState:
    """The controller's state as seen from here: what it wrote at its end, else whether its process lives (on this
    host) or its SLURM job is queued or running. A sweep that was not detached has no controller: its parent
    process (plan.json) is looked at instead, as the dashboard does."""
    cancelling = (sweep_dir / CANCEL_FILE).exists()
    if controller is None:
        from explaunch.sweepdir.reader import read_plan, sweep_live

        plan = plan if plan is not None else read_plan(sweep_dir)
        if plan is not None and sweep_live(sweep_dir, plan):
            where = f"pid {plan.get('pid')} on {plan.get('host')}"
            return SeenState(CANCELLING if cancelling else RUNNING, f"not detached: {where}")
        return SeenState(CANCELLED if cancelling else NONE, "not detached")
    if controller.state in ENDED:
        code = f"exit {controller.exit_code}, " if controller.exit_code is not None else ""
        return SeenState(controller.state, f"{code}ended {controller.ended}", controller)
    if controller.slurm_job_id and (controller.pid is None or controller.host != socket.gethostname()):
        slurm = slurm_job_state(controller.slurm_job_id)
        detail = f"SLURM job {controller.slurm_job_id}" + (f" {slurm}" if slurm else "")
        if slurm is None:
            return SeenState(UNKNOWN, f"{detail}: squeue and sacct do not answer", controller)
        seen = SLURM_LIVE_STATES.get(slurm)
        if seen is not None:
            return SeenState(CANCELLING if cancelling else seen, detail, controller)
        return ended_without_word(sweep_dir, controller, cancelling, detail)
    where = f"pid {controller.pid} on {controller.host}"
    if controller.host != socket.gethostname() or controller.pid is None:
        return SeenState(UNKNOWN, f"{where}: not this host, cannot tell from here", controller)
    if controller_alive(controller.pid, controller.pid_start):
        return SeenState(CANCELLING if cancelling else RUNNING, where, controller)
    return ended_without_word(sweep_dir, controller, cancelling, where)


def ended_without_word(sweep_dir: Path, controller: Controller, cancelling: bool, where: str) -> SeenState:
    """A controller that is no more and did not write its end: cancelled (explaunch cancel), finished (its summary is
    there: it was killed just after), or gone."""
    if cancelling:
        return SeenState(CANCELLED, f"{where}: ended", controller)
    summary, plan = sweep_dir / "sweep.json", sweep_dir / "plan.json"
    with contextlib.suppress(OSError):
        if summary.stat().st_mtime >= plan.stat().st_mtime:
            return SeenState(FINISHED, f"{where}: ended after its summary", controller)
    return SeenState(GONE, f"{where}: ended without finishing (killed, or its node lost)", controller)


def process_state(pid: int) -> str | None:
    """The kernel's one-letter state of ``pid`` (``Z`` for a zombie), None when there is no such process; ``?``
    where /proc cannot tell (not Linux)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        if Path("/proc/self/stat").exists():
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return "?"
        return "?"
    except OSError:
        return "?"
    return text.rpartition(")")[2].split()[0]


def process_start(pid: int) -> str | None:
    """When ``pid`` began, in clock ticks after boot (``/proc/<pid>/stat``, field 22): with the pid, it names one
    process for good. None where /proc cannot tell."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return fields[19] if len(fields) > 19 else None


def controller_alive(pid: int, started: str | None = None) -> bool:
    """Whether ``pid`` is a live process, not a zombie, and the one that began at ``started`` (a pid reused since
    by another process is not)."""
    state = process_state(pid)
    if state is None or state in ("Z", "X"):
        return False
    return started is None or process_start(pid) in (None, started)


def group_members(pgid: int) -> list[int]:
    """The live processes of process group ``pgid`` (the controller's session: its workers and their jobs)."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [pgid]
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def run_slurm(args: list[str]) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(
            args, capture_output=True, text=True, timeout=SLURM_TIMEOUT_S, stdin=subprocess.DEVNULL, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None


def slurm_job_state(job_id: str) -> str | None:
    """The job's SLURM state (``RUNNING``, ``COMPLETED``, ``CANCELLED``...): squeue while it is known there, else
    sacct; ``ENDED`` where neither remembers it; None where neither answers."""
    queued = run_slurm(["squeue", "-h", "-j", job_id, "-o", "%T"])
    if queued is not None and queued.returncode == 0 and queued.stdout.strip():
        return queued.stdout.split()[0]
    accounted = run_slurm(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State"])
    if accounted is not None and accounted.returncode == 0 and accounted.stdout.strip():
        return accounted.stdout.split()[0]
    if queued is None and accounted is None:
        return None
    return "ENDED"


def slurm_jobs_of(sweep_dir: Path) -> list[str]:
    """The SLURM jobs the sweep submitted (submitit names a folder after each in ``.submitit/``): array ids."""
    folder = sweep_dir / ".submitit"
    try:
        names = [p.name for p in folder.iterdir() if p.is_dir()]
    except OSError:
        return []
    return sorted({name.split("_")[0] for name in names if name.split("_")[0].isdigit()}, key=int)


def active_slurm_jobs(job_ids: Sequence[str]) -> dict[str, str]:
    """Those of ``job_ids`` (arrays) with a task still queued or running: id of each task -> its state."""
    if not job_ids:
        return {}
    queued = run_slurm(["squeue", "-h", "-j", ",".join(job_ids), "-o", "%i %T"])
    if queued is None or queued.returncode != 0:
        return {}
    found = {}
    for line in queued.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            found[parts[0]] = parts[1]
    return found


# ---- explaunch cancel -----------------------------------------------------------------------------------------
def write_cancel_marker(sweep_dir: Path) -> None:
    from explaunch.sweepdir.records import write_json_atomic

    user = os.environ.get("USER") or os.environ.get("LOGNAME") or str(os.getuid())
    write_json_atomic(sweep_dir / CANCEL_FILE, {"time": now_iso(), "by": f"{user}@{socket.gethostname()}"})


def signal_local(pid: int, signum: int) -> bool:
    """Signal the sweep's process and, where it leads a process group of its own (a detached controller, a sweep
    started from a terminal), the whole group: its workers and their jobs, as Ctrl-C in a terminal does."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signum)
        else:
            os.kill(pid, signum)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def signal_jobs(pid: int, signum: int) -> int:
    """Signal the processes of the sweep's process group but the sweep's own (its workers, their jobs), where it
    leads a group of its own; how many were signalled."""
    try:
        if os.getpgid(pid) != pid:
            return 0
    except (ProcessLookupError, PermissionError):
        return 0
    count = 0
    for member in group_members(pid):
        if member != pid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(member, signum)
                count += 1
    return count


def signal_group(pgid: int, signum: int) -> None:
    """Signal what is left of a dead controller's process group (the jobs it left running)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def cancel_slurm_jobs(sweep_dir: Path, controller_job: str | None) -> list[str]:
    """Stop a SLURM sweep: its controller stops launching (SIGTERM: it cancels the tasks still queued), the running
    tasks of its job arrays are interrupted (SIGINT: each job records itself ``cancelled``), the queued ones
    cancelled. Returns what was done, one line each."""
    done = []
    if controller_job:
        state = slurm_job_state(controller_job)
        if state == "PENDING":
            run_slurm(["scancel", controller_job])
            done.append(f"controller job {controller_job} cancelled in the queue")
        elif state in SLURM_LIVE_STATES:
            run_slurm(["scancel", "--full", "--signal=TERM", controller_job])
            done.append(f"controller job {controller_job} told to stop launching")
    arrays = slurm_jobs_of(sweep_dir)
    active = active_slurm_jobs(arrays)
    if active:
        running = sorted(job for job, state in active.items() if state in ("RUNNING", "COMPLETING", "CONFIGURING"))
        run_slurm(["scancel", "--state=PENDING", *arrays])
        if running:
            run_slurm(["scancel", "--signal=INT", *running])
        done.append(f"{len(running)} running job(s) interrupted, {len(active) - len(running)} queued cancelled")
    return done


def finish_slurm_cancel(controller_job: str | None, sweep_dir: Path) -> None:
    """What is left after a cancel's grace time: ended for good (``scancel``)."""
    leftovers = list(active_slurm_jobs(slurm_jobs_of(sweep_dir)))
    if controller_job and slurm_job_state(controller_job) in SLURM_LIVE_STATES:
        leftovers.append(controller_job)
    if leftovers:
        run_slurm(["scancel", *leftovers])


# ---- explaunch attach: taking over from a controller that is gone ---------------------------------------------
def running_job_folders(sweep_dir: Path, since: float) -> list[Path]:
    """Job folders whose job began (Hydra wrote ``.hydra/``) since ``since`` and left no record yet."""
    found = []
    try:
        children = [p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
    except OSError:
        return []
    for folder in children:
        marker = folder / ".hydra" / "overrides.yaml"
        with contextlib.suppress(OSError):
            if marker.stat().st_mtime >= since - 1 and not (folder / "job.json").exists():
                found.append(folder)
    return found


def settle_orphans(sweep_dir: Path, controller: Controller, say: Any, poll_s: float = 1.0) -> None:
    """Before a new controller runs the sweep: jobs the dead one left running finish and record themselves (the
    new controller then takes them as done, none runs twice); jobs queued behind them do not begin (the stop
    file); what is left of the dead controller's processes (idle workers) is ended."""
    from explaunch.sweepdir.reader import read_plan

    plan = read_plan(sweep_dir) or {}
    since = float(plan.get("started") or 0.0)
    local = controller.pid is not None and controller.host == socket.gethostname() and not controller.slurm_job_id
    stop_file = sweep_dir / STOP_FILE
    if local:
        assert controller.pid is not None
        with contextlib.suppress(OSError):
            stop_file.touch()
        told = False
        while group_members(controller.pid) and running_job_folders(sweep_dir, since):
            if not told:
                count = len(running_job_folders(sweep_dir, since))
                say(f"waiting for {count} job(s) the controller left running to finish and record themselves")
                told = True
            time.sleep(poll_s)
        end_group(controller.pid)
        stop_file.unlink(missing_ok=True)
    if controller.launcher == SLURM:
        arrays = slurm_jobs_of(sweep_dir)
        if active_slurm_jobs(arrays):
            run_slurm(["scancel", "--state=PENDING", *arrays])  # never began: the new controller runs them
        told = False
        while running := active_slurm_jobs(arrays):
            if not told:
                say(f"waiting for {len(running)} SLURM job(s) the controller left running: {' '.join(sorted(running))}")
                told = True
            time.sleep(max(poll_s, 2.0))


def end_group(pgid: int, grace_s: float = 5.0) -> None:
    """End what is left of a dead controller's process group (idle workers): SIGTERM, then SIGKILL."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        if not group_members(pgid):
            return
        signal_group(pgid, signum)
        end = time.monotonic() + grace_s
        while group_members(pgid) and time.monotonic() < end:
            time.sleep(0.1)


def takeover_command(controller: Controller) -> list[str]:
    """The controller's command, to run again; a secret given literally was redacted from it: not runnable."""
    if not controller.command or any(REDACTED in arg for arg in controller.command):
        raise ExplaunchError(
            "the sweep's command holds a secret given on the command line, which explaunch never writes down: run "
            "the sweep's command again yourself, with hydra.sweep.dir=<the sweep folder>, to finish it"
        )
    return list(controller.command)


if __name__ == "__main__":
    main()
