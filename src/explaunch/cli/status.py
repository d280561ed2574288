"""``explaunch status SWEEP_DIR [--json] [--watch [SECONDS]]``: where a sweep stands, detached or not: its jobs by
state, the time left, and its controller (running, finished, cancelled, or gone: killed or its node lost).

Read from the sweep folder alone, cheaply enough for a sweep of thousands of jobs: ``plan.json`` (the jobs of this
run of the sweep), ``ledger.jsonl`` (one line per outcome: most jobs are known from it, without reading their
records), a ``stat`` of each job folder (begun: Hydra's ``.hydra/``; recorded: ``job.json``), the records of the few
jobs the ledger does not know yet, and ``controller.json`` (:mod:`explaunch.launch.controller_state`). No MLflow.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from explaunch.errors import RecordError, UsageError
from explaunch.launch.controller_state import CANCEL_FILE, CONTROLLER_FILE, CONTROLLER_LOG, Controller, controller_state
from explaunch.sweepdir import records
from explaunch.sweepdir.ledger import Ledger, LedgerEntry
from explaunch.sweepdir.reader import is_sweep, read_json, read_plan
from explaunch.table import format_table

# The states a job is counted in, in the order shown. "retrying": failed, and about to run again (or running again).
STATES = (
    "pending",
    "running",
    "completed",
    "failed",
    "retrying",
    records.CANCELLED,
    records.TIMEOUT,
    records.INTERRUPTED,
)
UNFINISHED = frozenset({"pending", "running", "retrying"})
LOST = "lost"  # began, left no record, and nothing runs the sweep any more: shown only when there is one
DEFAULT_WATCH_S = 2.0


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "status",
        help="where a sweep stands: jobs by state, time left, its controller (detached sweeps)",
        description="One table of a sweep's jobs by state (pending, running, completed, failed, retrying, "
        "cancelled, timeout, interrupted), the time left, and the state of its controller (running, finished, "
        "cancelled, gone). Reads the sweep folder only.",
    )
    parser.add_argument("sweep_dir", type=Path, metavar="SWEEP_DIR", help="a sweep folder (multirun/<date>/<time>)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument(
        "--watch",
        nargs="?",
        type=float,
        const=DEFAULT_WATCH_S,
        default=None,
        metavar="SECONDS",
        help=f"print it again every SECONDS (default {DEFAULT_WATCH_S:g}) until the sweep ends; Ctrl-C stops",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    sweep_dir = check_sweep_dir(args.sweep_dir)
    if args.watch is not None and not args.watch > 0:
        raise UsageError(f"--watch {args.watch:g}: must be a number of seconds > 0")
    try:
        while True:
            status = sweep_status(sweep_dir)
            print(json.dumps(status, indent=2) if args.json else format_status(status), flush=True)
            if args.watch is None or not status["controller"]["live"]:
                break
            time.sleep(args.watch)
            if not args.json:
                print()
    except KeyboardInterrupt:
        return 0
    return 0


def check_sweep_dir(path: Path) -> Path:
    """``path`` as an absolute sweep folder, or the one-line error (exit 2) of a folder that is not one."""
    if not path.is_dir():
        raise UsageError(f"{path}: no such folder (give a sweep folder, multirun/<date>/<time>)")
    if not (is_sweep(path) or (path / CONTROLLER_FILE).is_file()):
        raise UsageError(f"{path}: not a sweep folder (no plan.json, ledger.jsonl, sweep.json or job folders)")
    return path.absolute()


@dataclass
class JobState:
    num: int | None
    job_dir: str
    status: str
    attempt: int = 0
    duration_s: float | None = None
    started: float | None = None  # epoch seconds, for a running job

    def as_dict(self) -> dict[str, Any]:
        return {
            "num": self.num,
            "job_dir": self.job_dir,
            "status": self.status,
            "attempt": self.attempt,
            "duration_s": round(self.duration_s, 3) if self.duration_s is not None else None,
        }


def sweep_status(sweep_dir: Path) -> dict[str, Any]:
    """Everything ``explaunch status`` shows, as plain data (its ``--json``)."""
    now = time.time()
    plan = read_plan(sweep_dir)
    controller = Controller.read(sweep_dir)
    seen = controller_state(sweep_dir, controller, plan)
    cancelled = (sweep_dir / CANCEL_FILE).exists()
    jobs = job_states(sweep_dir, plan, controller, seen.live, cancelled)
    counts = dict.fromkeys(STATES, 0)
    for job in jobs:
        counts[job.status] = counts.get(job.status, 0) + 1
    if not counts.get(LOST):
        counts.pop(LOST, None)
    parallelism = plan.get("parallelism") if plan else None
    parallelism = parallelism if isinstance(parallelism, int) and parallelism > 0 else 1
    durations = [j.duration_s for j in jobs if j.duration_s and j.status not in UNFINISHED]
    mean = statistics.fmean(durations) if durations else None
    summary = read_json(sweep_dir / records.SWEEP_FILE) if not seen.live else None
    return {
        "sweep_dir": str(sweep_dir),
        "controller": {
            "state": seen.state,
            "live": seen.live,
            "detail": seen.detail,
            "cancel_requested": cancelled,
            **(controller_fields(controller) if controller else {}),
            **({"log": str(sweep_dir / CONTROLLER_LOG)} if controller else {}),
        },
        "total": len(jobs),
        "done": sum(1 for j in jobs if j.status not in UNFINISHED),
        "counts": counts,
        "parallelism": parallelism,
        "mean_duration_s": round(mean, 3) if mean is not None else None,
        "eta_s": eta(jobs, mean, parallelism, now) if seen.live else None,
        "stop_reason": summary.get("stop_reason") if isinstance(summary, dict) else None,
        "jobs": [job.as_dict() for job in jobs],
    }


def controller_fields(controller: Controller) -> dict[str, Any]:
    return {
        "pid": controller.pid,
        "host": controller.host,
        "slurm_job_id": controller.slurm_job_id,
        "launcher": controller.launcher,
        "started": controller.started,
        "ended": controller.ended,
        "exit_code": controller.exit_code,
        "command": controller.command,
    }


def job_states(
    sweep_dir: Path, plan: dict[str, Any] | None, controller: Controller | None, live: bool, cancelled: bool
) -> list[JobState]:
    """Each job's state in this run of the sweep: from its ledger line when it has one written since the run began,
    else from its folder (running: begun, no record yet; its record, when the ledger does not have it yet)."""
    if plan is None:  # the controller has not planned yet (or the sweep was never planned here)
        count = controller.jobs if controller and controller.jobs and live else 0
        return [JobState(None, "", "pending") for _ in range(count)]
    value = plan.get("started")
    started = float(value) if isinstance(value, int | float) else 0.0
    ledger = Ledger(sweep_dir)
    by_dir: dict[str, LedgerEntry] = {}
    for entry in ledger.latest.values():
        by_dir[entry.job_dir] = entry
    retry = RetrySettings.read(sweep_dir) if live else None
    jobs = []
    for item in plan["jobs"]:
        if not isinstance(item, dict):
            continue
        rel = str(item.get("job_dir"))
        num = item.get("num") if isinstance(item.get("num"), int) else None
        found = by_dir.get(rel)
        if item.get("skipped"):
            done = found.duration_s if found else None
            jobs.append(JobState(num, rel, records.COMPLETED, found.attempt if found else 0, done))
            continue
        jobs.append(job_state(sweep_dir / rel, num, rel, found, started, live, cancelled, retry))
    return jobs


def job_state(
    folder: Path,
    num: int | None,
    rel: str,
    entry: LedgerEntry | None,
    started: float,
    live: bool,
    cancelled: bool,
    retry: RetrySettings | None,
) -> JobState:
    record_time = mtime(folder / records.JOB_FILE)
    began = mtime(folder / ".hydra" / "overrides.yaml")
    if entry is not None and (entry_time(entry) or 0.0) >= started - 1:
        status = entry.status
        if status != records.COMPLETED and live:
            again = began is not None and record_time is None  # its record archived: another attempt runs
            if again or (retry is not None and retry.will_retry(folder, entry)):
                return JobState(num, rel, "retrying", entry.attempt, None, began if again else None)
        return JobState(num, rel, status, entry.attempt, entry.duration_s)
    if record_time is not None and record_time >= started - 1:  # recorded; the ledger will say so in a moment
        with contextlib.suppress(RecordError):
            record = records.read_job_record(folder)
            return JobState(num, rel, record.status, 1, record.duration_s)
    if began is not None and began >= started - 1:
        if live:
            return JobState(num, rel, "running", started=began)
        return JobState(num, rel, records.CANCELLED if cancelled else LOST)
    if live:
        return JobState(num, rel, "pending")
    return JobState(num, rel, records.CANCELLED if cancelled else "pending")


@dataclass(frozen=True)
class RetrySettings:
    """``hydra.sweeper.max_retries`` and ``retry_on`` of the sweep (``multirun.yaml``): whether a failed job is about
    to run again."""

    max_retries: int
    retry_on: frozenset[str]

    @classmethod
    def read(cls, sweep_dir: Path) -> RetrySettings | None:
        import yaml

        try:
            data = yaml.safe_load((sweep_dir / "multirun.yaml").read_text(encoding="utf-8"))
            sweeper = data["hydra"]["sweeper"]
            return cls(int(sweeper.get("max_retries") or 0), frozenset(str(t) for t in sweeper.get("retry_on") or ()))
        except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError):
            return None

    def will_retry(self, folder: Path, entry: LedgerEntry) -> bool:
        if entry.status != records.FAILED or entry.attempt > self.max_retries:
            return False
        try:
            error = records.read_job_record(folder).error
        except RecordError:
            return False
        return error is not None and bool({error.type, *error.bases} & self.retry_on)


def mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def entry_time(entry: LedgerEntry) -> float | None:
    try:
        return datetime.fromisoformat(entry.time).timestamp()
    except (TypeError, ValueError):
        return None


def eta(jobs: list[JobState], mean: float | None, parallelism: int, now: float) -> float | None:
    """The time left: the mean duration of the jobs finished in this run times the work left (pending and retrying
    jobs, and what the running ones have not yet used of that mean), over the parallelism."""
    if mean is None:
        return None
    waiting = sum(1 for j in jobs if j.status == "pending" or (j.status == "retrying" and j.started is None))
    running = sum(max(0.0, mean - (now - j.started)) for j in jobs if j.started is not None)
    return round((waiting * mean + running) / parallelism, 1)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def controller_line(status: dict[str, Any]) -> str:
    controller = status["controller"]
    line = f"controller: {controller['state']}"
    if controller.get("detail"):
        line += f" ({controller['detail']})"
    if controller["cancel_requested"] and controller["state"] != records.CANCELLED:
        line += ", cancel requested"
    return line


def format_status(status: dict[str, Any]) -> str:
    counts = status["counts"]
    rows = [{"state": state, "jobs": count} for state, count in counts.items()]
    rows.append({"state": "total", "jobs": status["total"]})
    lines = [f"sweep {status['sweep_dir']}", controller_line(status), format_table(rows, ["state", "jobs"])]
    if status["controller"]["live"]:
        mean = status["mean_duration_s"]
        basis = f"mean job {mean:.1f} s" if mean is not None else "no job finished yet"
        lines.append(f"time left: {duration(status['eta_s'])} ({basis}, parallelism {status['parallelism']})")
    elif status.get("stop_reason"):
        lines.append(f"stopped early: {status['stop_reason']}")
    return "\n".join(lines)


def progress_line(status: dict[str, Any]) -> str:
    """One line of ``explaunch attach``: done over total, the counts that are not zero, the time left."""
    counts = ", ".join(f"{count} {state}" for state, count in status["counts"].items() if count)
    stamp = datetime.now().strftime("%H:%M:%S")
    left = f", time left {duration(status['eta_s'])}" if status["eta_s"] is not None else ""
    return f"[{stamp}] {status['done']}/{status['total']} done: {counts or 'no jobs yet'}{left}"
