"""The MLflow relay process, driven as the sweeper drives it: a real relay subprocess, a real sqlite store."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import mlflow
import pytest

from explaunch.sweepdir import records
from explaunch.tracking.relay import LOG_FILE, RELAY_NICE, MlflowRelay
from explaunch.tracking.store import RUN_ID_FILE, SweepTracking
from explaunch.tracking.writer import epoch_ms

pytestmark = pytest.mark.slow  # each test starts a relay (imports MLflow: ~2 s)


def job(sweep_dir: Path, num: int, status: str = records.COMPLETED) -> Path:
    job_dir = sweep_dir / str(num)
    error = None if status == records.COMPLETED else records.JobError("RuntimeError", "boom")
    record = records.JobRecord(
        status=status,
        overrides=[f"seed={num}"],
        config={"seed": num, "tracking": {"log_artifacts": True}},
        config_hash=f"h{num}",
        start_time=f"2026-11-23T10:00:0{num}.250+00:00",
        end_time=f"2026-11-23T10:00:0{num}.750+00:00",
        duration_s=0.5,
        job_num=num,
        metrics={"loss": 1.0 / (num + 1)},
        info={"host": "here"},
        error=error,
        tracking={"backend": "mlflow", "logged_by": "sweep"},
    )
    records.write_job_record(job_dir, record)
    return job_dir


def test_the_relay_logs_each_recorded_job_and_closes_the_sweep_run(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    relay = MlflowRelay.start(store, "exp", sweep_dir, {"command": "python main.py -m"})
    assert SweepTracking.read(sweep_dir) == SweepTracking(store, "", "", "sweep")  # at once: the jobs read it
    dirs = [job(sweep_dir, 0), job(sweep_dir, 1, records.FAILED)]
    for job_dir in dirs:
        relay.job_recorded(job_dir)
    relay.flush()
    assert not relay.pending
    records.write_sweep_record(sweep_dir)
    relay.close()
    assert relay.proc.returncode == 0, (sweep_dir / LOG_FILE).read_text()

    tracking = SweepTracking.read(sweep_dir)
    assert tracking is not None and tracking.parent_run_id and tracking.logged_by == "sweep"
    client = mlflow.MlflowClient(store)
    parent = client.get_run(tracking.parent_run_id)
    assert parent.info.status == "FAILED" and parent.data.metrics["jobs_total"] == 2  # one job failed
    for job_dir in dirs:
        record = records.read_job_record(job_dir)
        run_id = record.tracking["run_id"]
        assert (job_dir / RUN_ID_FILE).read_text() == run_id and record.callback_errors == []
        run = client.get_run(run_id)
        assert run.data.tags["mlflow.parentRunId"] == tracking.parent_run_id
        assert run.info.run_name == ",".join(record.overrides)
        assert (run.info.start_time, run.info.end_time) == (epoch_ms(record.start_time), epoch_ms(record.end_time))
        assert run.info.status == ("FINISHED" if record.status == records.COMPLETED else "FAILED")
        assert run.data.metrics["loss"] == record.metrics["loss"] and run.data.params["seed"] == str(record.job_num)
        assert "job.json" in {a.path for a in client.list_artifacts(run_id)}


def test_a_store_that_cannot_be_opened_is_written_into_every_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    relay = MlflowRelay.start("http://127.0.0.1:9", "exp", sweep_dir, {})  # nothing listens on port 9
    job_dir = job(sweep_dir, 0)
    relay.job_recorded(job_dir)
    relay.flush()
    records.write_sweep_record(sweep_dir)
    relay.close()
    errors = records.read_job_record(job_dir).callback_errors
    assert len(errors) == 1 and errors[0].startswith("mlflow: no run logged: "), errors


def test_jobs_a_killed_relay_never_logged_say_so(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    relay = MlflowRelay.start(store, "exp", sweep_dir, {})
    os.kill(relay.proc.pid, signal.SIGKILL)
    relay.proc.wait()
    job_dir = job(sweep_dir, 0)
    relay.job_recorded(job_dir)
    relay.flush()  # returns: the relay is gone
    relay.close()
    errors = records.read_job_record(job_dir).callback_errors
    assert len(errors) == 1 and "the MLflow relay ended (exit code -9" in errors[0], errors


def test_the_relay_lowers_its_session_s_share_of_the_cpu_until_the_first_job_has_ended(tmp_path: Path) -> None:
    """The relay is a session of its own: with sched_autogroup its nice value alone would not yield to the jobs. It
    yields while the first jobs start, then takes its fair share so that logging keeps pace with the jobs."""
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    relay = MlflowRelay.start(f"sqlite:///{tmp_path / 'mlflow.db'}", "relay-priority", sweep_dir, {})
    try:
        autogroup = Path(f"/proc/{relay.proc.pid}/autogroup")  # "/autogroup-123 nice 10", where the kernel has it

        def lowered() -> bool:  # the relay sets its nice value, then its session's (autogroup) one, as it starts
            nice = os.getpriority(os.PRIO_PROCESS, relay.proc.pid) == RELAY_NICE
            return nice and (not autogroup.exists() or autogroup.read_text().split()[-1] == str(RELAY_NICE))

        deadline = time.monotonic() + 10
        while not lowered() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert os.getpriority(os.PRIO_PROCESS, relay.proc.pid) == RELAY_NICE
        assert os.getsid(relay.proc.pid) != os.getsid(0)
        if autogroup.exists():
            assert autogroup.read_text().split()[-1] == str(RELAY_NICE), autogroup.read_text()

        started_with = os.getpriority(os.PRIO_PROCESS, 0)  # the relay inherits this process's nice value
        relay.job_recorded(job(sweep_dir, 0))  # the first job has ended

        def restored() -> bool:
            nice = os.getpriority(os.PRIO_PROCESS, relay.proc.pid)
            share = autogroup.read_text().split()[-1] if autogroup.exists() else "0"  # a new session's starts at 0
            # raising a thread's priority back needs CAP_SYS_NICE; its session's share needs nothing
            return (nice == started_with or os.geteuid() != 0) and share == "0"

        deadline = time.monotonic() + 10
        while not restored() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert restored(), (os.getpriority(os.PRIO_PROCESS, relay.proc.pid), autogroup.read_text())
        relay.flush()
        records.write_sweep_record(sweep_dir)
    finally:
        relay.close()


def test_the_relays_input_skips_a_line_that_is_no_message_and_always_ends() -> None:
    import io

    from explaunch.tracking.relay import read_messages

    first_jobs: list[bool] = []
    stream = io.StringIO('{"flush": 1}\nnot json\n{"job": "/s/0"}\n{"job": "/s/1"}\n')
    messages = read_messages(stream, lambda: first_jobs.append(True))
    got = [messages.get(timeout=10) for _ in range(4)]
    assert got == [{"flush": 1}, {"job": "/s/0"}, {"job": "/s/1"}, None]
    assert first_jobs == [True]  # called at the first job's message, once
