"""explaunch's sweeper on real ``python main.py -m`` subprocesses, driven by the ``probe`` experiment type."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

from explaunch.launch.settings import STOP_FILE
from explaunch.sweepdir import records
from explaunch.sweepdir.ledger import Ledger
from tests.conftest import MAIN
from tests.integration.helpers import run_main

pytestmark = pytest.mark.slow
PROBE = ("experiment_type=probe", "experiment_type.duration_s=0.1", "tracking=none")


def statuses(sweep_dir: Path) -> dict[int | None, str]:
    return {r.job_num: r.status for _, r in records.iter_job_records(sweep_dir)}


@pytest.mark.parametrize("launcher", ["basic", "joblib", "explaunch_local"])
def test_one_failing_job_among_six_leaves_five_completed_a_summary_and_exit_1(tmp_path: Path, launcher: str) -> None:
    sweep = tmp_path / "sweep"
    proc = run_main(
        "-m", "seed=range(0,6)", *PROBE, "experiment_type.fail=raise", "experiment_type.fail_seeds=[2]",
        f"hydra/launcher={launcher}", f"hydra.sweep.dir={sweep}", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 1
    assert statuses(sweep) == {
        0: "completed",
        1: "completed",
        2: "failed",
        3: "completed",
        4: "completed",
        5: "completed",
    }
    summary = proc.stderr[proc.stderr.index("sweep " + str(sweep)) :]
    assert "5 completed, 1 not completed" in summary
    assert "ValueError" in summary and "seed=2" in summary and str(sweep / "2" / "traceback.txt") in summary
    sweep_record = records.read_sweep_record(sweep)
    assert sweep_record.counts == {"completed": 5, "failed": 1}
    assert "sweep: {'completed': 5, 'failed': 1}" in proc.stdout + proc.stderr  # on_multirun_end ran


def test_all_completed_exits_0_and_a_rerun_runs_nothing(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    args = ("-m", "seed=range(0,4)", *PROBE, "hydra/launcher=basic", f"hydra.sweep.dir={sweep}")
    assert run_main(*args, cwd=tmp_path).returncode == 0
    before = {p: p.stat().st_mtime_ns for p in sweep.rglob("job.json")}
    again = run_main(*args, cwd=tmp_path)
    assert again.returncode == 0
    assert "4 of 4 jobs already done, 0 to run" in again.stdout + again.stderr
    assert {p: p.stat().st_mtime_ns for p in sweep.rglob("job.json")} == before


def test_out_of_memory_retries_with_half_the_batch(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = run_main(
        "-m", "batch=8,32", *PROBE, "experiment_type.fail=oom", "experiment_type.oom_above_batch=16",
        "hydra/launcher=basic", f"hydra.sweep.dir={sweep}", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = records.read_job_record(sweep / "1")
    assert record.status == records.COMPLETED
    assert record.config["batch"] == 16 and record.metrics["batch_size"] == 16
    assert record.overrides[0] == "batch=16" or "batch=16" in record.overrides
    (attempt,) = record.attempts
    assert attempt["batch_size"] == 32 and attempt["error_type"] == "MemoryError" and attempt["status"] == "failed"
    assert (sweep / "1" / "attempts" / "1" / "record.json").is_file()
    assert records.read_job_record(sweep / "0").attempts == []  # batch 8 fitted


def test_flaky_job_completes_on_its_second_attempt(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = run_main(
        "-m", "seed=0,1", *PROBE, "experiment_type.fail=flaky", "experiment_type.fail_seeds=[1]",
        "experiment_type.fail_attempts=1", "hydra.sweeper.max_retries=2", "hydra.sweeper.backoff_s=0.2",
        "hydra/launcher=basic", f"hydra.sweep.dir={sweep}", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = records.read_job_record(sweep / "1")
    assert record.status == records.COMPLETED and record.metrics["attempt"] == 2
    assert [a["error_type"] for a in record.attempts] == ["ConnectionError"]
    ledger = [json.loads(line) for line in (sweep / "ledger.jsonl").read_text().splitlines()]
    assert [(e["job_num"], e["status"], e["attempt"]) for e in ledger if e["job_num"] == 1] == [
        (1, "failed", 1),
        (1, "completed", 2),
    ]


def test_a_config_error_in_a_job_is_never_retried(tmp_path: Path) -> None:
    prompts = tmp_path / "bad.jsonl"
    prompts.write_text("not json\n")
    sweep = tmp_path / "sweep"
    proc = run_main(
        "-m", "seed=0", f"experiment_type.prompts_file={prompts}", "tracking=none", "hydra.sweeper.max_retries=3",
        "hydra.sweeper.retry_on=[ConfigError,ExplaunchError]", "hydra/launcher=basic", f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 1
    record = records.read_job_record(sweep / "0")
    assert record.error is not None and record.error.type == "ConfigError" and record.attempts == []


def test_failure_rate_stop_launches_no_more_jobs(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = run_main(
        "-m", "seed=range(0,10)", *PROBE, "experiment_type.fail=raise", "hydra.sweeper.max_failure_rate=0.5",
        "hydra.sweeper.min_jobs_for_rate=3", "hydra/launcher=basic", f"hydra.sweep.dir={sweep}", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 1
    assert len(statuses(sweep)) == 3  # 3 failed of 3 finished > 0.5: the 7 others never started
    sweep_record = records.read_sweep_record(sweep)
    assert sweep_record.stop_reason is not None and "failure rate 3/3" in sweep_record.stop_reason
    assert len(sweep_record.not_run) == 7
    assert "stopped early: failure rate 3/3" in proc.stderr


def test_failure_rate_stop_on_explaunch_local_accounts_for_every_job(tmp_path: Path) -> None:
    """explaunch's launcher keeps a job queued per worker; once the sweep stops, a queued job that has not begun does
    not begin (fastlaunch.Gate). Every job is either recorded or listed as not run, and a job listed so left nothing."""
    sweep = tmp_path / "sweep"
    proc = run_main(
        "-m", "seed=range(0,12)", "experiment_type=probe", "experiment_type.duration_s=0.3", "tracking=none",
        "experiment_type.fail=raise", "hydra.sweeper.max_failure_rate=0.5", "hydra.sweeper.min_jobs_for_rate=2",
        "hydra/launcher=explaunch_local", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={sweep}", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 1
    ran = statuses(sweep)
    sweep_record = records.read_sweep_record(sweep)
    assert sweep_record.stop_reason is not None and "failure rate" in sweep_record.stop_reason
    assert 2 <= len(ran) <= 6 and set(ran.values()) == {"failed"}  # 2 to stop, at most 2 running + 2 queued
    assert len(ran) + len(sweep_record.not_run) == 12
    for overrides in sweep_record.not_run:
        (seed,) = [int(o.split("=")[1]) for o in overrides if o.startswith("seed=")]
        assert seed not in ran and not (sweep / str(seed) / ".hydra").exists(), seed
    assert not (sweep / STOP_FILE).exists()


@pytest.mark.parametrize("launcher", ["joblib", "explaunch_local"])
def test_a_job_past_its_time_limit_is_recorded_timeout_and_the_sweep_goes_on(launcher: str, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = run_main(
        "-m", "experiment_type.duration_s=600,0.1", "experiment_type=probe", "tracking=none",
        "hydra.sweeper.job_timeout_s=2", f"hydra/launcher={launcher}", f"hydra.sweep.dir={sweep}", cwd=tmp_path,
        timeout=300,  # a job that is not ended at its limit would hold the sweep for 10 minutes
    )  # fmt: skip
    assert proc.returncode == 1
    assert statuses(sweep) == {0: "timeout", 1: "completed"}
    record = records.read_job_record(sweep / "0")
    assert record.error is not None and record.error.type == "JobTimeout" and record.duration_s < 10


def test_sigint_stops_the_sweep_and_resume_completes_every_job_exactly_once(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    args = ["-m", "seed=range(0,6)", "experiment_type=probe", "experiment_type.duration_s=1.5",
            "hydra/launcher=basic", f"hydra.sweep.dir={sweep}"]  # fmt: skip
    env_cmd = [sys.executable, str(MAIN), *args]
    proc = subprocess.Popen(env_cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for _ in range(600):
        if any(s == "completed" for s in statuses(sweep).values()) if sweep.exists() else False:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    first = statuses(sweep)
    assert 1 <= list(first.values()).count("completed") < 6
    assert set(first.values()) <= {"completed", "interrupted"}  # a running job ended cleanly or says it was cut
    sweep_record = records.read_sweep_record(sweep)
    assert sweep_record.stop_reason == "interrupted" and len(sweep_record.not_run) == 6 - len(first)

    resumed = run_main(*args, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert list(statuses(sweep).values()) == ["completed"] * 6
    assert len(list(sweep.rglob("job.json"))) == 6
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    completed = [r for r in runs if r.data.tags.get("status") == "COMPLETED"]
    assert sorted(r.data.tags["job_num"] for r in completed) == [str(i) for i in range(6)]  # once each
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"  # the same sweep run, resumed
    ledger = Ledger(sweep)
    assert sorted(e.status for e in ledger.latest.values()) == ["completed"] * 6


@pytest.mark.parametrize("launcher", ["joblib", "explaunch_local"])
def test_a_killed_worker_is_recorded_and_rerun_on_resume(launcher: str, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    args = ["-m", "seed=range(0,4)", *PROBE, "experiment_type.fail=kill", "experiment_type.fail_seeds=[1]",
            "experiment_type.fail_attempts=1", f"hydra/launcher={launcher}", f"hydra.sweep.dir={sweep}"]  # fmt: skip
    proc = run_main(*args, cwd=tmp_path)
    assert proc.returncode == 1
    record = records.read_job_record(sweep / "1")
    assert record.status == records.FAILED and record.error is not None and record.error.type == "WorkerDied"
    # loky ends every worker when one dies: a job running beside job 1 at that moment is recorded WorkerDied too;
    # the others ran (in a new pool when they had not begun)
    for num, status in statuses(sweep).items():
        error = records.read_job_record(sweep / str(num)).error
        assert status == "completed" or (error is not None and error.type == "WorkerDied"), (num, status)
    assert len(statuses(sweep)) == 4
    resumed = run_main(*args, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert list(statuses(sweep).values()) == ["completed"] * 4
    (earlier,) = records.read_job_record(sweep / "1").attempts  # the attempt of the first run, kept
    assert earlier["error_type"] == "WorkerDied" and earlier["files"] == "attempts/1"


@pytest.mark.parametrize("launcher", ["basic", "joblib", "explaunch_local"])
def test_ctrl_c_during_a_job_records_it_interrupted(tmp_path: Path, launcher: str) -> None:
    """Ctrl-C in a terminal signals the whole process group: the parent and, with joblib, its workers."""
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, str(MAIN), "-m", "seed=0", *PROBE, "experiment_type.duration_s=60",
           f"hydra/launcher={launcher}", f"hydra.sweep.dir={sweep}"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    marker = sweep / "0" / "probe_attempts"  # written by the task itself: the job is running
    for _ in range(600):
        if marker.exists():
            break
        time.sleep(0.1)
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    record = records.read_job_record(sweep / "0")
    assert record.status == records.INTERRUPTED and record.duration_s < 30
    assert record.error is not None and record.error.type == "JobInterrupted"
    assert Ledger(sweep).status(Ledger(sweep).latest.popitem()[0]) == records.INTERRUPTED


@pytest.mark.parametrize("launcher", ["explaunch_local", "joblib"])
def test_explaunch_local_streams_jobs_where_hydras_joblib_launcher_runs_batches(launcher: str, tmp_path: Path) -> None:
    """Long and short jobs alternate on 2 workers. explaunch's launcher starts job 2 on the worker that ran short job
    1 while long job 0 still runs; Hydra's joblib launcher, which explaunch's sweeper calls through its public
    ``launch``, runs batches of n_jobs: job 2 waits for job 0."""
    sweep = tmp_path / "sweep"
    proc = run_main(
        "-m", "seed=0,1,2,3", "experiment_type=probe", "experiment_type.duration_s=2,0.1", "tracking=none",
        f"hydra/launcher={launcher}", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={sweep}", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = {r.job_num: r for _, r in records.iter_job_records(sweep)}
    assert [found[n].config["experiment_type"]["duration_s"] for n in range(4)] == [2.0, 0.1, 2.0, 0.1]
    if launcher == "explaunch_local":
        assert found[2].start_time < found[0].end_time, (found[0].end_time, found[2].start_time)
    else:
        assert found[2].start_time >= found[0].end_time, (found[0].end_time, found[2].start_time)


def test_a_completed_job_whose_ledger_line_was_lost_is_not_run_again(tmp_path: Path) -> None:
    """The sweep killed between a job writing its completed record and the sweep writing its ledger line: the rerun
    takes the record (its config hash is the job's) as done, writes the line, and runs only what is left."""
    sweep = tmp_path / "sweep"
    args = ("-m", "seed=0,1,2", *PROBE, "hydra/launcher=basic", f"hydra.sweep.dir={sweep}")
    first = run_main(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    ledger = sweep / "ledger.jsonl"
    lines = ledger.read_text().splitlines()
    kept = [line for line in lines if json.loads(line)["job_num"] == 0]
    ledger.write_text("".join(f"{line}\n" for line in kept))  # the lines of jobs 1 and 2 never made it
    (sweep / "2" / records.JOB_FILE).unlink()  # and job 2 left no record: it runs again
    before = (sweep / "1" / records.JOB_FILE).read_bytes()

    again = run_main(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "job 1: completed before the sweep stopped" in again.stdout + again.stderr
    assert "2 of 3 jobs already done, 1 to run" in again.stdout + again.stderr
    assert (sweep / "1" / records.JOB_FILE).read_bytes() == before and not (sweep / "1" / "attempts").exists()
    assert sorted(e.status for e in Ledger(sweep).latest.values()) == ["completed"] * 3
