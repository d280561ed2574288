"""Sweeps on a real SLURM cluster (started by scripts/slurm/up.sh) through hydra/launcher=submitit_slurm."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import mlflow
import pytest

from explaunch.sweepdir import records
from tests.conftest import MAIN
from tests.integration.helpers import TINY, run_main
from tests.slurm.conftest import SCRIPTS, alive, recorded_pids

pytestmark = [pytest.mark.slow, pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]
PROBE = ("experiment_type=probe", "tracking=none", "hydra/launcher=submitit_slurm")


def statuses(sweep_dir: Path) -> dict[int | None, str]:
    return {r.job_num: r.status for _, r in records.iter_job_records(sweep_dir)}


def test_the_cluster_script_is_idempotent() -> None:
    before = recorded_pids()
    again = subprocess.run([str(SCRIPTS / "up.sh")], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "started" not in again.stdout  # nothing was started twice
    assert recorded_pids() == before and all(alive(pid) for pid in before.values())


def test_literal_sweep_on_slurm_records_slurm_ids_and_mlflow_runs(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = run_main(
        "-m", "hydra/launcher=submitit_slurm", "model=llama,mistral", "batch=8,16", *TINY,
        f"hydra.sweep.dir={sweep}", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = list(records.iter_job_records(sweep))
    assert [r.status for _, r in found] == ["completed"] * 4
    array_ids = {r.snapshot["slurm"]["SLURM_ARRAY_JOB_ID"] for _, r in found}
    assert len(array_ids) == 1  # one sbatch for the batch: a job array
    assert sorted(r.snapshot["slurm"]["SLURM_ARRAY_TASK_ID"] for _, r in found) == ["0", "1", "2", "3"]
    assert all(r.snapshot["slurm"]["SLURMD_NODENAME"] for _, r in found)
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 4 and {r.data.tags["status"] for r in children} == {"COMPLETED"}
    assert (sweep / "ledger.jsonl").read_text().count("\n") == 4


def test_a_job_killed_by_itself_is_recorded_failed_and_does_not_hang_the_sweep(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    start = time.perf_counter()
    proc = run_main(
        "-m", "seed=0,1", *PROBE, "experiment_type.fail=kill", "experiment_type.fail_seeds=[1]",
        f"hydra.sweep.dir={sweep}", cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert time.perf_counter() - start < 120
    assert proc.returncode == 1
    assert statuses(sweep) == {0: "completed", 1: "failed"}
    record = records.read_job_record(sweep / "1")
    assert record.error is not None and record.error.type == "WorkerDied"


def test_a_job_past_its_slurm_time_limit_is_recorded_timeout_and_the_others_complete(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = run_main(
        "-m", "experiment_type.duration_s=0.2,600", *PROBE, "hydra.launcher.timeout_min=1",
        "hydra.launcher.signal_delay_s=10", f"hydra.sweep.dir={sweep}", cwd=tmp_path, timeout=400,
    )  # fmt: skip
    assert proc.returncode == 1
    assert statuses(sweep) == {0: "completed", 1: "timeout"}
    assert "timeout" in proc.stderr and "timed-out" in proc.stderr  # the summary names it


def test_interrupt_cancels_queued_jobs_and_resume_completes_each_once(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    args = ["-m", "seed=range(0,4)", "experiment_type=probe", "experiment_type.duration_s=8",
            "hydra/launcher=submitit_slurm", f"hydra.sweep.dir={sweep}"]  # fmt: skip
    proc = subprocess.Popen([sys.executable, str(MAIN), *args], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    for _ in range(600):  # two jobs run (2 CPUs), two wait in the queue
        if len(list(sweep.glob("*/probe_attempts"))) >= 2:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 130, stderr[-2000:]
    assert "cancelled 2 jobs still waiting in the queue" in stdout + stderr
    first = statuses(sweep)
    assert sorted(first.values()) == ["completed", "completed", "interrupted", "interrupted"]
    for _ in range(60):  # a job that has just written its record may take SLURM a moment to leave the queue
        queue = subprocess.run(["squeue", "-h", "-o", "%i %T"], capture_output=True, text=True).stdout
        if "PENDING" not in queue and "RUNNING" not in queue:
            break
        time.sleep(0.5)
    assert "PENDING" not in queue and "RUNNING" not in queue

    resumed = run_main(*args, cwd=tmp_path, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert list(statuses(sweep).values()) == ["completed"] * 4
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    done = sorted(r.data.tags["job_num"] for r in runs if r.data.tags.get("status") == "COMPLETED")
    assert done == ["0", "1", "2", "3"]  # each job completed exactly once


def test_a_two_process_job_runs_as_two_slurm_tasks_of_one_job(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = run_main(
        "-m", "hydra/launcher=submitit_slurm", "sharding=ddp,fsdp", "hardware=cpu", "batch=4",
        "batching.num_prompts=16", "batching.max_new_tokens=8", "batching.warmup_batches=1", "tracking=none",
        f"hydra.sweep.dir={sweep}", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = [r for _, r in records.iter_job_records(sweep)]
    assert [r.status for r in found] == ["completed", "completed"]
    for record in found:
        assert record.snapshot["slurm"]["SLURM_NTASKS"] == "2"  # one job, two tasks (srun steps)
        assert record.info["launch"].startswith("tasks of slurm job")
        processes = record.info["processes"]
        assert [p["rank"] for p in processes] == [0, 1] and len({p["pid"] for p in processes}) == 2
        assert record.metrics["output_tokens"] == 128 == processes[1]["group_output_tokens"]
    assert found[0].info["processes"][1]["output_sha256"] == found[1].info["processes"][1]["output_sha256"]


def requeued_jobs() -> list[tuple[str, str]]:
    """(job id, restart count) of each job SLURM holds after a requeue (pending, reason BeginTime, restarted)."""
    found = []
    queue = subprocess.run(["squeue", "-h", "-t", "PENDING", "-o", "%i %r"], capture_output=True, text=True)
    for line in queue.stdout.splitlines():
        job_id, _, reason = line.partition(" ")
        if reason.strip() != "BeginTime":
            continue
        shown = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout
        restarts = re.search(r"Restarts=(\d+)", shown)
        if "JobState=PENDING" in shown and restarts is not None and restarts.group(1) != "0":
            found.append((job_id, restarts.group(1)))  # not one just submitted (it can show BeginTime a moment)
    return found


def release_requeued_jobs(stop: threading.Event, settle_s: float = 15.0) -> None:
    """SLURM holds a requeued job about two minutes (pending, reason BeginTime); an operator's ``scontrol update
    StartTime=now`` lets it start sooner, which is all this does, to keep the test short. Once per requeue, and only
    after ``settle_s``: the attempt that was requeued is still ending (srun waits up to 7 s for its step), and an
    attempt released meanwhile failed at once (seen: FAILED, NonZeroExitCode, 0.3 s after the release)."""
    released: set[tuple[str, str]] = set()
    seen: dict[tuple[str, str], float] = {}
    while not stop.wait(1.0):
        for key in requeued_jobs():
            job_id = key[0]
            if key not in released and time.monotonic() - seen.setdefault(key, time.monotonic()) >= settle_s:
                released.add(key)
                subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], capture_output=True)


def test_a_checkpointing_job_past_its_time_limit_is_requeued_and_completes_in_one_run(tmp_path: Path) -> None:
    """Opting in (max_num_timeout > 0): at the time-limit warning submitit requeues the job; the probe keeps its
    progress in the job folder, so the next attempt finishes it. One record, one MLflow run. SLURM sends the warning
    on its periodic check, "up to 60 seconds earlier than specified" (sbatch --signal): an attempt may run only ~10 s
    of the probe's 40 (seen in CI: 4 attempts, 38 s of progress), so the job may be requeued up to 8 times."""
    sweep = tmp_path / "sweep"
    stop = threading.Event()
    releaser = threading.Thread(target=release_requeued_jobs, args=(stop,), daemon=True)
    releaser.start()
    try:
        proc = run_main(
            "-m", "experiment_type=probe", "experiment_type.checkpoint=true", "experiment_type.duration_s=40",
            "hydra/launcher=submitit_slurm", "hydra.launcher.timeout_min=1", "hydra.launcher.signal_delay_s=20",
            "hydra.launcher.max_num_timeout=8", f"hydra.sweep.dir={sweep}", cwd=tmp_path, timeout=900,
        )  # fmt: skip
    finally:
        stop.set()
        releaser.join()
    record = records.read_job_record(sweep / "0")
    assert proc.returncode == 0, f"{record.error}\n{proc.stderr[-3000:]}"
    assert record.status == "completed" and record.metrics["attempt"] >= 2
    assert 0 < record.metrics["resumed_at_s"] < 40  # the last attempt went on from saved progress
    assert int(record.snapshot["slurm"]["SLURM_RESTART_COUNT"]) >= 1
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 1 and children[0].info.status == "FINISHED"
    assert children[0].data.tags["status"] == "COMPLETED" and "requeued" in children[0].data.tags


def test_ctrl_c_while_a_requeued_job_waits_to_run_again_cancels_it_and_records_it_interrupted(tmp_path: Path) -> None:
    """A job requeued at its time limit waits in the queue again (SLURM holds it about two minutes): one Ctrl-C
    cancels it like any queued job, records it ``interrupted`` and the sweep ends at once."""
    sweep = tmp_path / "sweep"
    args = ["-m", "experiment_type=probe", "experiment_type.checkpoint=true", "experiment_type.duration_s=300",
            "tracking=none", "hydra/launcher=submitit_slurm", "hydra.launcher.timeout_min=1",
            "hydra.launcher.signal_delay_s=20", "hydra.launcher.max_num_timeout=8",
            f"hydra.sweep.dir={sweep}"]  # fmt: skip
    proc = subprocess.Popen([sys.executable, str(MAIN), *args], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        for _ in range(240):  # the warning comes 20-60 s before the one-minute limit
            if requeued_jobs():
                break
            time.sleep(0.5)
        assert requeued_jobs(), "the job was not requeued"
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr[-2000:]
    assert "cancelled 1 jobs still waiting in the queue" in stdout + stderr
    assert statuses(sweep) == {0: "interrupted"}
    assert requeued_jobs() == []
