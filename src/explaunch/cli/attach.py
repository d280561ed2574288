"""``explaunch attach SWEEP_DIR``: follow a detached sweep, and take it over when its controller is gone.

While the controller lives, a status line is printed each time a job changes state; when it ends, the last one and
how it ended. A controller that ended before the sweep finished (gone: ``kill -9``, a lost node; or interrupted:
SIGTERM, its SLURM job cancelled or out of time) is replaced: the jobs it left running finish and record themselves
first (those queued behind them do not begin), then its command runs again here, in the foreground, into the same
folder. That is a resume: every job completed before (by its record, even one the dead controller never wrote in
the ledger) is skipped, none runs twice. Ctrl-C while following stops following; once taken over, it is the sweep's.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from explaunch.cli.status import check_sweep_dir, format_status, progress_line, sweep_status
from explaunch.errors import ExplaunchError, UsageError
from explaunch.launch.controller import CONTROLLER_VARIABLE, SLURM_JOB_VARIABLE
from explaunch.launch.controller_actions import settle_orphans, takeover_command
from explaunch.launch.controller_state import CANCELLED, NONE, UNFINISHED, UNKNOWN, Controller, controller_state

DEFAULT_INTERVAL_S = 1.0


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "attach",
        help="follow a detached sweep; take it over (resume it here) if its controller is gone",
        description="Print a status line as the jobs of a detached sweep finish, until its controller ends. If "
        "the controller is gone (killed, node lost) before the sweep finished, run the sweep's command again "
        "here, in the foreground, into the same folder: it resumes, no completed job runs again.",
    )
    parser.add_argument("sweep_dir", type=Path, metavar="SWEEP_DIR", help="a sweep folder (multirun/<date>/<time>)")
    parser.add_argument(
        "--interval",
        type=float,
        default=DEFAULT_INTERVAL_S,
        metavar="SECONDS",
        help=f"how often to look at the sweep folder (default {DEFAULT_INTERVAL_S:g})",
    )
    parser.set_defaults(handler=run)


def say(line: str) -> None:
    print(line, flush=True)


def run(args: argparse.Namespace) -> int:
    sweep_dir = check_sweep_dir(args.sweep_dir)
    if not args.interval > 0:
        raise UsageError(f"--interval {args.interval:g}: must be a number of seconds > 0")
    try:
        status = follow(sweep_dir, args.interval)
    except KeyboardInterrupt:
        say("stopped following; the sweep goes on")
        return 0
    state = status["controller"]["state"]
    if state in UNFINISHED:
        return take_over(sweep_dir)
    if state == UNKNOWN:
        raise ExplaunchError(f"{sweep_dir}: cannot follow its controller from here ({status['controller']['detail']})")
    say(format_status(status))
    if state == CANCELLED:
        say(f"the sweep was cancelled; to finish it, run its command again with hydra.sweep.dir={sweep_dir}")
    if state == NONE and not status["total"]:
        raise UsageError(f"{sweep_dir}: no sweep runs here and none was detached here")
    counts = status["counts"]
    return 0 if status["total"] and counts.get("completed") == status["total"] else 1


def follow(sweep_dir: Path, interval: float) -> dict[str, Any]:
    """Print a line whenever the jobs' states change, until the controller is no longer live; its last status."""
    shown = None
    while True:
        status = sweep_status(sweep_dir)
        key = (status["counts"], status["controller"]["state"])
        if status["controller"]["live"] and key != shown:
            say(progress_line(status))
            shown = key
        if not status["controller"]["live"]:
            return status
        time.sleep(interval)


def take_over(sweep_dir: Path) -> int:
    """Run the controller's command again here, once the jobs it left running have recorded themselves."""
    controller = Controller.read(sweep_dir)
    assert controller is not None  # a gone controller is one controller.json names
    command = takeover_command(controller)
    seen = controller_state(sweep_dir, controller)
    say(f"the sweep's controller is {seen.state} ({seen.detail}); taking the sweep over here")
    settle_orphans(sweep_dir, controller, say)
    say("resuming: " + shlex.join(command))
    env = {**os.environ, CONTROLLER_VARIABLE: str(sweep_dir)}
    env.pop(SLURM_JOB_VARIABLE, None)
    try:
        process = subprocess.Popen(command, cwd=controller.cwd, env=env)
    except OSError as ex:
        raise ExplaunchError(f"cannot run the sweep's command again: {ex}") from None
    while True:
        try:
            code = process.wait()
            break
        except KeyboardInterrupt:  # the sweep, in the same terminal, got it too: it decides what a Ctrl-C does
            continue
    sys.stdout.flush()
    return code if code >= 0 else 128 - code
