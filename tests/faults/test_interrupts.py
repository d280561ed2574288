"""Signals met as a user meets them: Ctrl-C in the terminal (SIGINT to the whole process group: the sweep, its
workers), once or twice, and a job killed with SIGKILL (the kernel's OOM killer) where it runs in the sweep's own
process (the basic launcher)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from explaunch.sweepdir import records
from explaunch.sweepdir.ledger import Ledger
from tests.faults.helpers import job_runs, start_sweep, statuses, wait_until
from tests.integration.helpers import run_main

pytestmark = pytest.mark.slow


def running(sweep: Path, *nums: int) -> bool:
    """The probe task itself has begun in each of these jobs."""
    return all((sweep / str(n) / "probe_attempts").exists() for n in nums)


def test_ctrl_c_twice_interrupts_at_once_keeps_whole_records_and_a_rerun_finishes(tmp_path: Path) -> None:
    """Two jobs running on 2 of explaunch's workers and two queued behind them; Ctrl-C, and again 0.3 s later: the jobs
    are cut at once, the sweep ends with exit 130, every record and ledger line it wrote is whole, each job's run
    is logged or said to be missing, and the same command then finishes the sweep, each job completed once, every
    run logged."""
    sweep = tmp_path / "sweep"
    args = ("-m", "seed=range(0,4)", "experiment_type=probe", "experiment_type.duration_s=2",
            "hydra/launcher=explaunch_local", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={sweep}")  # fmt: skip
    proc = start_sweep(*args, cwd=tmp_path)
    try:
        wait_until(lambda: running(sweep, 0, 1), "jobs 0 and 1 running", proc)
        time.sleep(0.3)
        started = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        time.sleep(0.3)
        os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
        took = time.monotonic() - started
    finally:
        proc.kill()
        proc.communicate()

    assert proc.returncode == 130, stderr[-3000:]
    # the jobs were cut at once (all interrupted, below); what the sweep then waits for is its MLflow relay, which
    # logs their records at its own, lowered, priority: seconds here, about 20 s on a machine kept busy
    assert took < 45, (took, stderr[-3000:])
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    first = statuses(sweep)  # every record readable
    assert first[0] == first[1] == records.INTERRUPTED and set(first.values()) == {records.INTERRUPTED}
    sweep_record = records.read_sweep_record(sweep)
    assert sweep_record.stop_reason == "interrupted"
    assert len(first) + len(sweep_record.not_run) == 4
    ledger = Ledger(sweep)  # every line whole
    assert sorted(e.status for e in ledger.latest.values()) == [records.INTERRUPTED] * len(first)
    unlogged = 0  # a record written after the sweep stopped listening is left to the rerun (or explaunch sync)
    for job_dir, record in records.iter_job_records(sweep):
        assert bool(record.tracking.get("run_id")) != bool(record.tracking.get("pending")), job_dir
        unlogged += bool(record.tracking.get("pending"))
    if unlogged:
        assert f"MLflow: {unlogged} run(s) not logged; to log them: explaunch sync {sweep}" in stderr

    again = run_main(*args, cwd=tmp_path, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert statuses(sweep) == dict.fromkeys(range(4), records.COMPLETED)
    completed = [r for r in job_runs(f"sqlite:///{tmp_path / 'mlflow.db'}") if r.data.tags["status"] == "COMPLETED"]
    assert sorted(r.data.tags["job_num"] for r in completed) == ["0", "1", "2", "3"]  # once each
    for _, record in records.iter_job_records(sweep):
        assert record.tracking.get("run_id") and not record.tracking.get("pending")


def test_one_ctrl_c_starts_none_of_the_jobs_queued_in_the_workers(tmp_path: Path) -> None:
    """README: after Ctrl-C "no new job starts". 4 jobs on 2 workers: 0 and 1 run, 2 and 3 wait in the workers."""
    sweep = tmp_path / "sweep"
    proc = start_sweep(
        "-m", "seed=range(0,4)", "experiment_type=probe", "experiment_type.duration_s=5", "tracking=none",
        "hydra/launcher=explaunch_local", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={sweep}", cwd=tmp_path,
    )  # fmt: skip
    try:
        wait_until(lambda: running(sweep, 0, 1), "jobs 0 and 1 running", proc)
        time.sleep(0.3)
        started = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
        took = time.monotonic() - started
    finally:
        proc.kill()
        proc.communicate()

    assert proc.returncode == 130, stderr[-3000:]
    assert statuses(sweep) == {0: records.INTERRUPTED, 1: records.INTERRUPTED}
    assert not (sweep / "2" / "probe_attempts").exists() and not (sweep / "3" / "probe_attempts").exists()
    assert records.read_sweep_record(sweep).stop_reason == "interrupted"
    assert took < 5, took  # 2 and 3 would have run 5 s


def test_a_job_sigkilled_on_the_basic_launcher_ends_the_sweep_and_a_rerun_finishes(tmp_path: Path) -> None:
    """The basic launcher runs jobs in the sweep's own process: a job killed by SIGKILL (the OOM killer) ends the
    sweep at once, exit 137, the killed job leaves no record; the folder is not held (the lock went with the
    process) and the same command runs what is left, the killed job included."""
    sweep = tmp_path / "sweep"
    args = ("-m", "seed=range(0,4)", "experiment_type=probe", "experiment_type.duration_s=0.2", "tracking=none",
            "experiment_type.fail=kill", "experiment_type.fail_seeds=[1]", "experiment_type.fail_attempts=1",
            "hydra/launcher=basic", f"hydra.sweep.dir={sweep}")  # fmt: skip
    first = run_main(*args, cwd=tmp_path, timeout=300)
    assert first.returncode == -signal.SIGKILL
    assert statuses(sweep) == {0: records.COMPLETED}
    assert [e.job_num for e in Ledger(sweep).latest.values()] == [0]

    again = run_main(*args, cwd=tmp_path, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "1 of 4 jobs already done, 3 to run" in again.stdout + again.stderr
    assert statuses(sweep) == dict.fromkeys(range(4), records.COMPLETED)
