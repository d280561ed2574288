"""The job folders and the MLflow store agree: a dead store is said before any job, runs the store missed are logged
on the next start or by ``explaunch sync``, a deleted experiment is restored or refused (issue 18, items 1, 2, 8)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import pytest

from explaunch.cli import main
from explaunch.sweepdir import records
from explaunch.tracking import sync as store_sync
from tests.integration.helpers import run_main

pytestmark = pytest.mark.slow


def dead_store(tmp_path: Path) -> str:
    """A store MLflow cannot create, even as root: its folder would have to be made inside a plain file."""
    (tmp_path / "not-a-folder").write_text("")
    return f"sqlite:///{tmp_path / 'not-a-folder' / 'store' / 'mlflow.db'}"


def sweep(tmp_path: Path, sweep_dir: Path, *extra: str) -> Any:
    return run_main(
        "-m", "experiment_type=probe", "seed=0,1", "hydra/launcher=basic", f"hydra.sweep.dir={sweep_dir}", *extra,
        cwd=tmp_path, timeout=300,
    )  # fmt: skip


def nothing_launched(sweep_dir: Path) -> bool:
    """Not even the sweep folder: the store is checked before the folder is made and locked."""
    return not sweep_dir.exists()


def job_runs(uri: str, experiment: str = "explaunch") -> list[Any]:
    client = mlflow.MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None
    return [r for r in client.search_runs([found.experiment_id]) if "job_dir" in r.data.tags]


def test_an_unwritable_store_stops_the_sweep_before_any_job(tmp_path: Path) -> None:
    sweep_dir, dead = tmp_path / "sweep", dead_store(tmp_path)
    proc = sweep(tmp_path, sweep_dir, f"tracking.uri={dead}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: MLflow store {dead} cannot be written: {tmp_path / 'not-a-folder'} is not a folder "
        "(tracking.required=false runs the sweep and leaves the runs to `explaunch sync`)"
    ]
    assert "Traceback" not in proc.stderr
    assert nothing_launched(sweep_dir)


def test_without_a_required_store_the_runs_wait_for_sync_which_logs_each_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep_dir, dead = tmp_path / "sweep", dead_store(tmp_path)
    proc = sweep(tmp_path, sweep_dir, f"tracking.uri={dead}", "tracking.required=false")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"MLflow: 2 run(s) not logged; to log them: explaunch sync {sweep_dir} --tracking-uri {dead}" in proc.stderr
    found = list(records.iter_job_records(sweep_dir))
    assert [r.tracking.get("pending") for _, r in found] == [True, True]

    store = f"sqlite:///{tmp_path / 'other.db'}"
    assert main(["sync", str(sweep_dir), "--tracking-uri", store]) == 0
    assert "2 run(s) logged" in capsys.readouterr().out
    runs = {r.info.run_id: r for r in job_runs(store)}
    for job_dir, record in records.iter_job_records(sweep_dir):
        run = runs[record.tracking["run_id"]]
        assert "pending" not in record.tracking and not record.callback_errors
        assert run.info.status == "FINISHED" and run.data.tags["status"] == "COMPLETED"
        assert run.data.params["seed"] == str(record.config["seed"])
        assert run.data.tags["job_dir"] == str(job_dir)
        assert set(run.data.metrics) >= {k for k, v in record.metrics.items() if isinstance(v, float)}
        artifacts = {a.path for a in mlflow.MlflowClient(store).list_artifacts(run.info.run_id)}
        assert "job.json" in artifacts
    assert main(["sync", str(sweep_dir), "--tracking-uri", store]) == 0
    assert "0 run(s) logged" in capsys.readouterr().out
    assert len(job_runs(store)) == 2


def test_runs_lost_from_the_store_come_back_when_the_sweep_runs_again(tmp_path: Path) -> None:
    """One job's run deleted, the other's left RUNNING (as a job killed mid-logging leaves it): the rerun, which
    has no job left to run, logs the first from its record and closes the second with its record's status."""
    sweep_dir = tmp_path / "sweep"
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert (proc := sweep(tmp_path, sweep_dir)).returncode == 0, proc.stderr[-2000:]
    assert store_sync.in_agreement(sweep_dir, store)  # a clean end stamps the store and the records
    (d0, r0), (d1, r1) = records.iter_job_records(sweep_dir)
    client = mlflow.MlflowClient(store)
    client.delete_run(r0.tracking["run_id"])
    assert not store_sync.in_agreement(sweep_dir, store)  # any write to the store voids the stamp
    client.update_run(r1.tracking["run_id"], status="RUNNING")

    assert (proc := sweep(tmp_path, sweep_dir)).returncode == 0, proc.stderr[-2000:]
    runs = job_runs(store)
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    new0 = records.read_job_record(d0).tracking["run_id"]
    assert new0 != r0.tracking["run_id"] and new0 in {r.info.run_id for r in runs}
    assert records.read_job_record(d1).tracking["run_id"] == r1.tracking["run_id"]
    assert (proc := sweep(tmp_path, sweep_dir)).returncode == 0  # nothing more to add
    assert len(job_runs(store)) == 2
    assert store_sync.in_agreement(sweep_dir, store)
    records.write_job_record(d0, records.read_job_record(d0))  # a record rewritten (explaunch sync, by hand)
    assert not store_sync.in_agreement(sweep_dir, store)


def test_a_deleted_experiment_is_refused_or_restored(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert (proc := sweep(tmp_path, tmp_path / "first")).returncode == 0, proc.stderr[-2000:]
    client = mlflow.MlflowClient(store)
    experiment = client.get_experiment_by_name("explaunch")
    assert experiment is not None
    client.delete_experiment(experiment.experiment_id)

    proc = sweep(tmp_path, tmp_path / "refused", "tracking.restore_deleted=false")
    assert proc.returncode == 2
    (line,) = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert "experiment 'explaunch'" in line and "is deleted" in line
    assert f"mlflow experiments restore --experiment-id {experiment.experiment_id}" in line
    assert nothing_launched(tmp_path / "refused")

    proc = sweep(tmp_path, tmp_path / "restored")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"MLflow: experiment 'explaunch' was deleted in {store}; restored it" in proc.stderr
    restored = client.get_experiment_by_name("explaunch")
    assert restored is not None and restored.lifecycle_stage == "active"
    assert len(job_runs(store)) == 4


def test_a_sweep_killed_hard_gets_every_run_on_rerun(tmp_path: Path) -> None:
    """SIGKILL of the sweep's MLflow relay, then of the sweep's process group once a job has ended (a lost login
    node): the rerun of the same command logs that job's run from its record, and leaves exactly one finished run
    per job record."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import MAIN

    sweep_dir = tmp_path / "sweep"
    args = ("experiment_type.duration_s=1", "seed=0,1,2")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    command = [sys.executable, str(MAIN), "-m", "experiment_type=probe", "hydra/launcher=basic", *args]
    proc = subprocess.Popen(
        [*command, f"hydra.sweep.dir={sweep_dir}"],
        cwd=tmp_path,
        env={**env, "MLFLOW_DISABLE_TELEMETRY": "true"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while (relay := relay_pid(sweep_dir)) is None:  # it runs in a session of its own, as the sweep started it
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    os.kill(relay, signal.SIGKILL)  # before it could log a run
    while not (sweep_dir / "0" / records.JOB_FILE).exists():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()

    rerun = run_main(*command[2:], f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path, timeout=300)  # the same command
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    found = list(records.iter_job_records(sweep_dir))
    assert len(found) == 3
    assert "MLflow: 1 run(s) logged from their records" in rerun.stdout + rerun.stderr  # job 0's, before any job
    runs = job_runs(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert sorted(r.data.tags["job_dir"] for r in runs) == sorted(str(d) for d, _ in found)
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert {r.tracking["run_id"] for _, r in found} == {r.info.run_id for r in runs}


def relay_pid(sweep_dir: Path) -> int | None:
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "explaunch.tracking.relay" in cmdline and str(sweep_dir) in cmdline:
            return int(entry.name)
    return None
