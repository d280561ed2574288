"""``explaunch cancel SWEEP_DIR [--wait SECONDS]``: stop a sweep: no new job starts, queued and running jobs are
cancelled and recorded ``cancelled``, the records, ledger and MLflow runs of the others stay whole.

It writes the folder's ``.cancel`` marker first (the signals that follow then mean a cancel, not an interrupt: see
:mod:`explaunch.launch.jobguard`), then:

- a local controller (basic, joblib, submitit_local), or a sweep run in a terminal: SIGINT to its process group, as
  Ctrl-C in its terminal would: it stops launching and its running jobs end, each recording itself; a second SIGINT
  follows when it has not ended after a while;
- a SLURM controller: SIGTERM to its job (it stops launching and cancels the tasks still queued), SIGINT to the
  running tasks of the sweep's job arrays, ``scancel`` of the queued ones; what is still there after ``--wait`` is
  ``scancel``-ed.

Running the sweep's command again (into the same folder) finishes it; that start removes the marker.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any

from explaunch.cli.status import check_sweep_dir, sweep_status
from explaunch.errors import ExplaunchError, UsageError
from explaunch.launch.controller_actions import (
    STOP_FILE,
    cancel_slurm_jobs,
    finish_slurm_cancel,
    running_job_folders,
    signal_group,
    signal_jobs,
    signal_local,
    write_cancel_marker,
)
from explaunch.launch.controller_state import (
    CANCELLED,
    FINISHED,
    INTERRUPTED,
    NONE,
    SLURM,
    UNKNOWN,
    Controller,
    active_slurm_jobs,
    controller_alive,
    controller_state,
    group_members,
    slurm_jobs_of,
)
from explaunch.sweepdir.reader import read_plan

DEFAULT_WAIT_S = 60.0
SECOND_SIGNAL_S = 10.0  # a local sweep that has not ended by then is signalled again: its running jobs are cut
STOP_WAIT_S = 2.0  # a streaming launch says it stopped (its stop file) well within this; a batch launch says nothing


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "cancel",
        help="stop a sweep: no new job starts, queued and running jobs are cancelled (recorded cancelled)",
        description="Stop a running sweep (detached or not): no new job starts, its queued and running jobs are "
        "cancelled and recorded as such; records, ledger and MLflow runs stay consistent. Running the sweep's "
        "command again into the same folder finishes it.",
    )
    parser.add_argument("sweep_dir", type=Path, metavar="SWEEP_DIR", help="a sweep folder (multirun/<date>/<time>)")
    parser.add_argument(
        "--wait",
        type=float,
        default=DEFAULT_WAIT_S,
        metavar="SECONDS",
        help=f"how long to wait for the sweep to end (default {DEFAULT_WAIT_S:g})",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    sweep_dir = check_sweep_dir(args.sweep_dir)
    if not args.wait >= 0:
        raise UsageError(f"--wait {args.wait:g}: must be a number of seconds >= 0")
    plan = read_plan(sweep_dir)
    controller = Controller.read(sweep_dir)
    seen = controller_state(sweep_dir, controller, plan)
    if seen.state in (FINISHED, NONE, CANCELLED) or (seen.state == INTERRUPTED and not still_running(sweep_dir)):
        print(f"{sweep_dir}: not running ({seen.state}); nothing to cancel")
        return 0
    if seen.state == UNKNOWN:
        raise ExplaunchError(f"{sweep_dir}: cannot reach its controller from here ({seen.detail})")
    write_cancel_marker(sweep_dir)
    signal_sweep = start_cancel(sweep_dir, controller, plan)
    ended = wait_for_end(sweep_dir, args.wait, signal_sweep)
    if not ended and controller is not None and controller.launcher == SLURM:
        finish_slurm_cancel(controller.slurm_job_id, sweep_dir)
        ended = wait_for_end(sweep_dir, 10.0, None)
    status = sweep_status(sweep_dir)
    counts = ", ".join(f"{count} {state}" for state, count in status["counts"].items() if count)
    if not ended:
        print(f"{sweep_dir}: cancel requested; the sweep has not ended yet ({counts}): explaunch status {sweep_dir}")
        return 1
    print(f"{sweep_dir}: cancelled ({counts}); to finish it, run the sweep's command again with hydra.sweep.dir=...")
    return 0


def start_cancel(sweep_dir: Path, controller: Controller | None, plan: dict[str, Any] | None) -> Any:
    """Signal the sweep; return what to call while waiting for it to end (None where there is nothing more to do)."""
    pid = controller.pid if controller is not None else (plan or {}).get("pid")
    on_slurm = controller is not None and controller.launcher == SLURM
    if on_slurm and controller is not None and controller.slurm_job_id:
        for line in cancel_slurm_jobs(sweep_dir, controller.slurm_job_id):
            print(line)
        return None
    if on_slurm:  # a controller run here (taken over in a terminal): the SLURM jobs are cancelled from here
        for line in cancel_slurm_jobs(sweep_dir, None):
            print(line)
    if not isinstance(pid, int):
        return None
    pid_start = controller.pid_start if controller is not None else None
    return LocalCancel(sweep_dir, pid, pid_start, float((plan or {}).get("started") or 0.0)).start()


class LocalCancel:
    """A sweep running here: SIGINT to it (it stops launching: see explaunch.launch.jobguard), then to the processes
    of its group that run jobs (each job records itself ``cancelled``), as Ctrl-C in its terminal would; the jobs
    only once one runs (a worker still warming up is left alone: the sweep will hand it nothing). A sweep that has
    not ended after a while is signalled again: its running jobs are cut."""

    def __init__(self, sweep_dir: Path, pid: int, pid_start: str | None, started: float) -> None:
        self.sweep_dir = sweep_dir
        self.pid = pid
        self.pid_start = pid_start
        self.started = started
        self.jobs_signalled = False
        self.again_at: float | None = time.monotonic() + SECOND_SIGNAL_S

    def start(self) -> LocalCancel:
        if controller_alive(self.pid, self.pid_start):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.pid, signal.SIGINT)
            self.wait_for_stop()
            self.signal_running_jobs()
            print(f"signalled the sweep (pid {self.pid}): no new job starts, running jobs are cancelled")
        elif group_members(self.pid):  # the controller is gone; jobs it started still run
            signal_group(self.pid, signal.SIGINT)
            self.jobs_signalled = True
            print(f"signalled the jobs the controller (pid {self.pid}) left running")
        return self

    def wait_for_stop(self) -> None:
        """The sweep first stops launching (it touches its stop file at the signal: jobs queued in its workers will
        not begin); only then are its running jobs cut, so that a worker freed by one takes no queued job."""
        stop_file = self.sweep_dir / STOP_FILE
        end = time.monotonic() + STOP_WAIT_S
        while not stop_file.exists() and time.monotonic() < end and controller_alive(self.pid):
            time.sleep(0.02)

    def signal_running_jobs(self) -> None:
        if not self.jobs_signalled and running_job_folders(self.sweep_dir, self.started):
            self.jobs_signalled = signal_jobs(self.pid, signal.SIGINT) > 0

    def __call__(self) -> None:
        """While waiting: jobs that began meanwhile are signalled; past the grace time, while jobs still run, the
        sweep and its jobs once more (never once no job runs: the sweep is then writing its records and waiting for
        its MLflow relay to log their runs, which a second signal would cut short)."""
        self.signal_running_jobs()
        if self.again_at is not None and time.monotonic() >= self.again_at:
            self.again_at = None
            if running_job_folders(self.sweep_dir, self.started):
                signal_local(self.pid, signal.SIGINT)


def wait_for_end(sweep_dir: Path, wait_s: float, while_waiting: Any) -> bool:
    """Until the sweep has ended (its controller, or the jobs a dead one left), at most ``wait_s`` seconds."""
    start = time.monotonic()
    while True:
        if not still_running(sweep_dir):
            return True
        if time.monotonic() - start >= wait_s:
            return False
        if while_waiting is not None:
            while_waiting()
        time.sleep(0.25)


def still_running(sweep_dir: Path) -> bool:
    controller = Controller.read(sweep_dir)
    seen = controller_state(sweep_dir, controller, read_plan(sweep_dir))
    if seen.live:
        return True
    if controller is not None and controller.pid is not None and not controller.slurm_job_id:
        return bool(group_members(controller.pid))
    if controller is not None and controller.launcher == SLURM:
        return bool(active_slurm_jobs(slurm_jobs_of(sweep_dir)))
    return False
