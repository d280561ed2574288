"""The MLflow relay: one process beside a local sweep that logs every job's run from its record.

Why: a job that logs its own run pays for MLflow in its own time — importing it (about 2 s), opening the store, and
three to ten requests per job (about 0.06 s on sqlite) — and with the basic launcher every job runs in the sweep's
own process, one after the other. For the local launchers (basic, joblib) the sweep's parent starts this relay
instead: it opens the store, creates the experiment and the sweep's parent run while the first jobs already run,
then logs each job's run as soon as the sweeper has read the job's ``job.json`` (start and end times as the job
recorded them), on another core. Jobs see ``logged_by: "sweep"`` in ``<sweep>/tracking.json`` and do not touch
MLflow. SLURM jobs, and any sweep with another launcher or MLflow's system metrics (which need the run while the job
runs), log their own runs as before.

What the relay did is written back into each ``job.json``: ``tracking.run_id`` (and ``<job>/mlflow_run_id``), or a
``callback_errors`` line saying why the run is missing or incomplete. When the relay is gone (killed, crashed), the
parent adds that line to every job it had not acknowledged. Its own log is ``<sweep>/mlflow_relay.log``.

Protocol: JSON lines. Parent -> relay (stdin): ``{"job": dir}``, ``{"flush": n}``, ``{"finish": true}``.
Relay -> parent (stdout): ``{"ready": ...}`` or ``{"unavailable": error}``, ``{"logged": dir, "run_id": id}`` /
``{"failed": dir, "error": text}``, ``{"flushed": n}``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TextIO

from explaunch import _compat
from explaunch.errors import RecordError
from explaunch.launch import jobguard
from explaunch.sweepdir import records
from explaunch.tracking.store import RUN_ID_FILE, SweepTracking

log = logging.getLogger(__name__)
LOG_FILE = "mlflow_relay.log"
STALL_S = 120.0  # a relay that acknowledges nothing for this long while jobs wait is stopped


class MlflowRelay:
    """The parent's handle on the relay process. Never raises into the sweep: a relay that is gone only means the
    jobs' records say their runs are missing."""

    def __init__(self, proc: subprocess.Popen[str], sweep_dir: Path) -> None:
        self.proc = proc
        self.sweep_dir = sweep_dir
        self.sent = 0
        self.pending: dict[str, int] = {}  # job dir -> how many of its records are not acknowledged yet
        self.replies: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.last_reply = time.monotonic()
        self.unavailable: str | None = None
        self._lock = threading.Lock()  # the sweeper notes records from its watcher thread and its main thread
        self._reader = threading.Thread(target=self._read, name="explaunch-mlflow-relay", daemon=True)
        self._reader.start()

    @classmethod
    def start(cls, tracking_uri: str, experiment: str, sweep_dir: Path, tags: Mapping[str, str]) -> MlflowRelay:
        """Tell the jobs that the sweep logs their runs, then start the relay (it does not wait for MLflow)."""
        previous = SweepTracking.read(sweep_dir)
        if previous is not None and previous.tracking_uri == tracking_uri:  # resumed: the same sweep run
            dataclasses.replace(previous, logged_by="sweep").write(sweep_dir)
        else:
            SweepTracking(tracking_uri, "", "", "sweep").write(sweep_dir)
        args = {
            "uri": tracking_uri,
            "experiment": experiment,
            "sweep_dir": str(sweep_dir),
            "tags": dict(tags),
            "start_ms": int(time.time() * 1000),  # the sweep run starts now, not when MLflow is ready
        }
        with (sweep_dir / LOG_FILE).open("a") as errors:
            proc = subprocess.Popen(
                [sys.executable, "-m", "explaunch.tracking.relay", json.dumps(args)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors,
                text=True,
                start_new_session=True,  # Ctrl-C stops the jobs, not the logging of what they did
            )
        return cls(proc, sweep_dir)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.replies.put(json.loads(line))
            except json.JSONDecodeError:
                continue
        self.replies.put(None)  # the relay is gone

    def _send(self, message: dict[str, Any]) -> bool:
        try:
            assert self.proc.stdin is not None
            with self._lock:
                self.proc.stdin.write(json.dumps(message) + "\n")
                self.proc.stdin.flush()
            return True
        except (OSError, ValueError):  # the relay is gone
            return False

    def job_recorded(self, job_dir: Path) -> None:
        key = str(job_dir)
        with self._lock:
            self.pending[key] = self.pending.get(key, 0) + 1
        self._send({"job": key})

    def _take(self, timeout: float) -> dict[str, Any] | bool | None:
        """The next reply; None when the relay is gone; False when none came within ``timeout``."""
        try:
            reply = self.replies.get(timeout=timeout)
        except queue.Empty:
            return False
        if reply is None:
            self.replies.put(None)  # stays gone for the next reader
            return None
        self.last_reply = time.monotonic()
        with self._lock:
            for kind in ("logged", "failed"):
                if kind in reply and reply[kind] in self.pending:
                    self.pending[reply[kind]] -= 1
                    if not self.pending[reply[kind]]:
                        del self.pending[reply[kind]]
        if "unavailable" in reply:
            self.unavailable = str(reply["unavailable"])
        return reply

    def flush(self) -> None:
        """Wait until the relay has logged every job it was told about (before a retry moves a record away, and
        before the sweep rewrites records at its end)."""
        self.sent += 1
        if not self._send({"flush": self.sent}):
            return
        while True:
            reply = self._take(timeout=0.2)
            if reply is None:
                return
            if jobguard.hurry_requested():
                log.warning("MLflow relay: not waiting for it (Ctrl-C); %d job(s) to log", len(self.pending))
                return
            if reply is False:
                if time.monotonic() - self.last_reply > STALL_S:
                    log.warning("MLflow relay: no progress for %.0f s, not waiting for it", STALL_S)
                    return
                continue
            if isinstance(reply, dict) and reply.get("flushed") == self.sent:
                return

    def close(self) -> None:
        """Let the relay log what is left and close the sweep's run (from ``sweep.json``), then exit."""
        if self._send({"finish": True}):
            assert self.proc.stdin is not None
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
            while self._take(timeout=0.2) is not None:
                if jobguard.hurry_requested():
                    self.proc.kill()
                    break
                if time.monotonic() - self.last_reply > STALL_S:
                    log.warning("MLflow relay: no progress for %.0f s, stopping it", STALL_S)
                    self.proc.kill()
                    break
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=5)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        if self.pending:
            why = self.unavailable or f"the MLflow relay ended (exit code {self.proc.returncode}; see {LOG_FILE})"
            for job_dir in self.pending:
                add_callback_error(Path(job_dir), f"mlflow: no run logged: {why}")
            log.warning("MLflow: %d job(s) without a run: %s", len(self.pending), why)
            self.pending.clear()


def add_callback_error(job_dir: Path, line: str) -> None:
    try:
        record = records.read_job_record(job_dir)
    except RecordError:
        return
    records.write_job_record(job_dir, dataclasses.replace(record, callback_errors=[*record.callback_errors, line]))


# ---- the relay process ---------------------------------------------------------------------------------------
def log_job(tracker: Any, sweep: SweepTracking, sweep_dir: Path, job_dir: Path) -> str:
    """One job's run from its record; the run id goes into the record (and ``mlflow_run_id``) before the record
    is logged as an artifact, as when a job logs itself."""
    from explaunch.tracking.writer import epoch_ms, job_run_tags, run_name

    record = records.read_job_record(job_dir)
    tags = job_run_tags(job_dir, str(record.info.get("host", "")), sweep_dir, record.job_num, record.tags)
    run_id = tracker.start_run(
        sweep.experiment_id, run_name(record.overrides), tags, sweep.parent_run_id, epoch_ms(record.start_time)
    )
    record = dataclasses.replace(record, tracking={**record.tracking, "run_id": run_id})
    records.write_text_atomic(job_dir / RUN_ID_FILE, run_id)
    records.write_job_record(job_dir, record)
    artifacts = bool(record.config.get("tracking", {}).get("log_artifacts", True))
    registered = tracker.log_job(run_id, record, job_dir, artifacts=artifacts)
    if registered is not None:
        records.write_job_record(
            job_dir, dataclasses.replace(record, tracking={**record.tracking, "registered_model": registered})
        )
    return str(run_id)


def why(ex: BaseException) -> str:
    """Why the store refused, in one line. MLflow raises its own error *from* the store's (SQLAlchemy's, raised from
    sqlite3's), and its first line may only say where it happened ("(raised as a result of Query-invoked autoflush;
    ...)"): the innermost error of the explicit ``raise ... from`` chain says what happened ("database or disk is
    full", "attempt to write a readonly database"). An error raised while handling another (MLflow's REST client) is
    already about its cause and is kept as it is."""
    seen = {id(ex)}
    while ex.__cause__ is not None and id(ex.__cause__) not in seen:
        ex = ex.__cause__
        seen.add(id(ex))
    lines = [line.strip() for line in str(getattr(ex, "message", None) or ex).splitlines() if line.strip()]
    return f"{type(ex).__name__}: {lines[0] if lines else ''}"[:300].rstrip(": ")


def _reply(out: TextIO, message: dict[str, Any]) -> None:
    out.write(json.dumps(message) + "\n")
    out.flush()


def read_messages(inp: TextIO, on_first_job: Callable[[], None]) -> queue.Queue[dict[str, Any] | None]:
    """The parent's messages, read by a thread of their own as they come (None after the last), while the relay
    may still be importing MLflow and opening the store; ``on_first_job`` is called at the first job's message."""
    messages: queue.Queue[dict[str, Any] | None] = queue.Queue()

    def read() -> None:
        first = True
        try:
            for line in inp:
                try:
                    message = json.loads(line)
                except ValueError:
                    log.error("not a message, ignored: %r", line[:200])
                    continue
                if first and "job" in message:
                    first = False
                    on_first_job()
                messages.put(message)
        finally:  # the relay's loop ends whatever ended this one
            messages.put(None)

    threading.Thread(target=read, name="explaunch-relay-input", daemon=True).start()
    return messages


def serve(args: dict[str, Any], inp: TextIO, out: TextIO, on_first_job: Callable[[], None] = lambda: None) -> int:
    from explaunch.tracking.sweeprun import finish_sweep, start_sweep
    from explaunch.tracking.writer import MlflowTracker

    messages = read_messages(inp, on_first_job)
    sweep_dir = Path(args["sweep_dir"])
    error = None
    try:
        sweep = start_sweep(
            args["uri"], args["experiment"], sweep_dir, args["tags"], logged_by="sweep", start_time_ms=args["start_ms"]
        )
        tracker = MlflowTracker(sweep.tracking_uri)
        _reply(out, {"ready": {"experiment_id": sweep.experiment_id, "parent_run_id": sweep.parent_run_id}})
        log.info("sweep run %s in %s", sweep.parent_run_id, sweep.tracking_uri)
    except Exception as ex:  # the store cannot be opened: every job's record says so
        error = why(ex)
        log.exception("MLflow unavailable")
        _reply(out, {"unavailable": error})
    finished = False
    while (message := messages.get()) is not None:
        if "job" in message:
            job_dir = Path(message["job"])
            if error is not None:
                add_callback_error(job_dir, f"mlflow: no run logged: {error}")
                _reply(out, {"failed": str(job_dir), "error": error})
                continue
            try:
                run_id = log_job(tracker, sweep, sweep_dir, job_dir)
                _reply(out, {"logged": str(job_dir), "run_id": run_id})
            except Exception as ex:
                text = f"mlflow: {why(ex)}"
                log.exception("job %s", job_dir)
                add_callback_error(job_dir, text)
                _reply(out, {"failed": str(job_dir), "error": text})
        elif "flush" in message:
            _reply(out, {"flushed": message["flush"]})
        elif message.get("finish"):
            finished = True
    if error is not None:
        return 1
    if finished:
        try:
            finish_sweep(sweep_dir, records.read_sweep_record(sweep_dir))
        except Exception:
            log.exception("closing the sweep run")
            return 1
    else:  # the parent is gone without saying so (killed): the sweep run did not end normally
        tracker.client.set_terminated(sweep.parent_run_id, status="KILLED")
    return 0


RELAY_NICE = 10
AUTOGROUP = Path("/proc/self/autogroup")


class Priority:
    """The relay's share of the CPU. Until the first job has ended, starting the sweep's jobs comes first: the relay
    imports MLflow and opens the store at ``RELAY_NICE``. From the first job's record on it takes its fair share
    again, so that logging keeps pace with the jobs instead of piling up behind them until the last one ends (a
    32-job sweep on 2 busy cores: the relay opened the store only after the last job).

    The relay runs in a session of its own (Ctrl-C in the terminal must not stop it), and Linux (sched_autogroup, on
    by default) shares the CPU fairly between sessions whatever their processes' nice values: its session's share
    (/proc/self/autogroup) is what counts there, and an unprivileged process may set it back to 0. The nice value of
    the relay's thread counts where autogroups are off; raising its priority back needs CAP_SYS_NICE (or
    RLIMIT_NICE), and without it stays lowered."""

    def __init__(self) -> None:
        self.tid = threading.get_native_id()  # Linux keeps a nice value per thread
        self.nice = os.getpriority(os.PRIO_PROCESS, self.tid)
        self.autogroup = self._autogroup()

    @staticmethod
    def _autogroup() -> int | None:
        try:
            return int(AUTOGROUP.read_text().split()[-1])
        except (OSError, ValueError, IndexError):
            return None

    def _set(self, nice: int, autogroup: int | None) -> None:
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, self.tid, nice)
        if autogroup is not None:
            with contextlib.suppress(OSError):
                AUTOGROUP.write_text(f"{autogroup}\n")

    def lower(self) -> None:
        self._set(max(self.nice, RELAY_NICE), None if self.autogroup is None else max(self.autogroup, RELAY_NICE))

    def restore(self) -> None:
        self._set(self.nice, self.autogroup)


def main() -> int:
    priority = Priority()
    priority.lower()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return serve(json.loads(sys.argv[1]), sys.stdin, sys.stdout, on_first_job=priority.restore)


if __name__ == "__main__":
    _compat.exit_fast(main())  # not Python's teardown of the modules MLflow loads (~0.35 s the sweep would wait for)
