"""What ``explaunch cancel`` and ``explaunch attach`` do to a sweep's controller and its jobs.

``explaunch cancel`` writes ``<sweep>/.cancel`` (:data:`explaunch.launch.jobguard.CANCEL_FILE`) before it signals the
sweep (its process group here, or its SLURM jobs); the next start of the sweep removes it
(:class:`explaunch.launch.controller.SweepRun`). ``explaunch attach`` takes over a sweep whose controller is gone or
was interrupted: the jobs the dead controller left running finish first (:func:`settle_orphans`), then its command
runs again (:func:`takeover_command`).

This module is imported by the ``explaunch`` commands: it imports nothing heavy at its top.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

from explaunch.errors import ExplaunchError
from explaunch.launch.controller_state import (
    SLURM,
    SLURM_LIVE_STATES,
    Controller,
    active_slurm_jobs,
    group_members,
    now_iso,
    run_slurm,
    slurm_job_state,
    slurm_jobs_of,
)
from explaunch.launch.jobguard import CANCEL_FILE
from explaunch.redaction import REDACTED

STOP_FILE = ".stop"  # explaunch.launch.sweeper's stop file: jobs queued in a worker see it and do not begin


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
