"""What became of a detached sweep's controller: ``<sweep>/controller.json`` (:class:`Controller`), and its state as
seen from here (:func:`controller_state`: alive, gone, queued...) from its process on this host or its SLURM job
(``squeue``, ``sacct``).

``<sweep>/controller.json`` says where the controller is: pid and host, or the SLURM job id, its command with secrets
redacted (:mod:`explaunch.redaction`), the launcher, and its state. The detaching process
(:mod:`explaunch.launch.controller`) writes it once the controller is started; the controller itself updates it when
it begins (its pid and host, which only it knows on SLURM) and when it ends (``finished``; ``cancelled`` by
``explaunch cancel``; ``interrupted`` by a signal from elsewhere: SIGTERM, ``scancel``, a time limit), with its exit
code. A controller that ended without saying so was killed (``kill -9``, a lost node): it is ``gone``. ``explaunch
attach`` takes over a sweep whose controller is gone or was interrupted (:mod:`explaunch.launch.controller_actions`).

This module is imported by the ``explaunch`` commands: it imports nothing heavy at its top.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from explaunch.launch.jobguard import CANCEL_FILE as CANCEL_FILE

CONTROLLER_FILE = "controller.json"
CONTROLLER_LOG = "controller.log"
CONTROLLER_SCHEMA_VERSION = 1
SLURM = "submitit_slurm"  # the launcher whose controller is a SLURM job of its own

# controller states, as controller.json holds them (written) and as explaunch status derives them (seen)
QUEUED, RUNNING, FINISHED, CANCELLED = "queued", "running", "finished", "cancelled"
INTERRUPTED = "interrupted"  # ended by a signal from outside (SIGTERM, a SLURM time limit, scancel): resumable
CANCELLING, GONE, UNKNOWN, NONE = "cancelling", "gone", "unknown", "none"
ENDED = frozenset({FINISHED, CANCELLED, INTERRUPTED})
UNFINISHED = frozenset({GONE, INTERRUPTED})  # the sweep's controller ended before the sweep: attach takes it over
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
