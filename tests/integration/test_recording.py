"""Every job leaves a complete record in its folder and an MLflow run: real subprocesses, a real sqlite store."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import mlflow
import pytest

from explaunch.sweepdir import records
from tests.conftest import ROOT
from tests.integration.conftest import SECRET, Sweep
from tests.integration.helpers import TINY, run_main

pytestmark = pytest.mark.slow

HEADLINE = ("throughput_e2e_tokens_per_s", "latency_batch_p95_s", "flops", "memory_peak_rss_mib", "energy_joules")


def runs_of(store: str) -> list[mlflow.entities.Run]:
    client = mlflow.MlflowClient(store)
    return [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id], max_results=1000)]


def test_each_job_is_one_mlflow_run_nested_under_one_sweep_run(literal_sweep: Sweep, tmp_path: Path) -> None:
    client = mlflow.MlflowClient(literal_sweep.store)
    runs = runs_of(literal_sweep.store)
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(children) == 6 and len(parents) == 1
    parent = parents[0]
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert parent.info.status == "FINISHED" and parent.data.metrics["jobs_completed"] == 6
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"sweep.json", "sweep.csv"}

    by_job = {r.data.tags["job_num"]: r for r in children}
    for job_dir, record in records.iter_job_records(literal_sweep.dir):
        run = by_job[str(record.job_num)]
        assert record.tracking["run_id"] == run.info.run_id
        assert run.info.run_name == ",".join(record.overrides)
        assert run.info.status == "FINISHED"
        assert run.data.tags["status"] == "COMPLETED"
        assert run.data.tags["config_hash"] == record.config_hash
        assert run.data.tags["mlflow.source.git.commit"] == record.snapshot["git"]["commit"]
        assert run.data.tags["host"] and run.data.tags["sweep_dir"] == str(literal_sweep.dir)
        assert run.data.params["model.name"] == record.config["model"]["name"]
        assert run.data.params["batching.batch_size"] == str(record.config["batching"]["batch_size"])
        assert len(run.data.params) >= 40
        for name in (*HEADLINE, "tokens_per_joule", "job_energy_joules", "resources_peak_rss_mib"):
            assert run.data.metrics[name] == pytest.approx(record.metrics[name]), name
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"job.json", ".hydra", "resources.csv", "emissions.csv", "main.log", "iterations.csv"} <= artifacts
        assert record.info["outputs_file"] == "outputs.jsonl" and "outputs.jsonl" in artifacts  # save_outputs=true
        (tmp_path / job_dir.name).mkdir()
        logged = Path(client.download_artifacts(run.info.run_id, "outputs.jsonl", str(tmp_path / job_dir.name)))
        assert logged.read_bytes() == (job_dir / "outputs.jsonl").read_bytes()
        assert len(logged.read_text().splitlines()) == 48  # one line per prompt
        assert (job_dir / "resources.csv").read_text().count("\n") >= 2


def test_job_folder_holds_snapshot_energy_and_resources(literal_sweep: Sweep) -> None:
    for job_dir, record in records.iter_job_records(literal_sweep.dir):
        assert record.callback_errors == []
        snap = record.snapshot
        assert snap["git"]["commit"] and snap["packages"]["torch"].startswith("2.14")
        assert snap["command"].startswith("python main.py model=")
        assert record.env_hash == snap["env_hash"]
        assert snap["environment"]["OMP_NUM_THREADS"] == "1"  # joblib's loky limits threads to cores / workers
        whole = record.energy
        assert whole["joules"] > 0 and {"cpu", "ram"} <= set(whole["components"])
        for component in whole["components"].values():
            assert component["source"] in ("counter", "sampled", "modelled")
            assert component["scope"] in ("devices", "process", "machine", "apportioned")
        # the whole job contains the measured region: both recorded, distinctly named
        assert record.metrics["job_energy_joules"] > record.metrics["energy_joules"] > 0
        assert record.metrics["job_energy_window_s"] > record.metrics["energy_window_s"]
        window = record.info["energy"]  # TINY's windows last a fraction of a second, the prefill window's too
        assert window["quality"] == "low" and window["quality_reasons"][0].startswith("generate window: window ")
        assert any(r.startswith("prefill window: window ") for r in window["quality_reasons"])
        assert window["quality_by_window"]["generate"]["quality"] == window["prefill"]["quality"] == "low"
        assert record.resources["samples"] >= 2 and record.resources["peak"]["rss_mib"] > 100
        assert (job_dir / "emissions.csv").is_file()
    envs = {r.env_hash for _, r in records.iter_job_records(literal_sweep.dir)}
    assert len(envs) == 1  # same code, packages and machine for every job


def test_no_secret_reaches_the_records_or_the_store(literal_sweep: Sweep) -> None:
    found = subprocess.run(["grep", "-rla", SECRET, str(literal_sweep.cwd)], capture_output=True, text=True)
    assert found.stdout == ""
    record = records.read_job_record(literal_sweep.dir / "0")
    assert record.snapshot["environment"]["EXPLAUNCH_TEST_API_TOKEN"] == "<redacted>"


def test_failed_job_is_a_failed_run_with_its_error(tmp_path: Path) -> None:
    prompts = tmp_path / "broken.jsonl"
    prompts.write_text('{"text": "fine"}\nnot json\n')
    proc = run_main(*TINY, f"experiment_type.prompts_file={prompts}", f"hydra.run.dir={tmp_path / 'job'}", cwd=tmp_path)
    assert proc.returncode != 0
    record = records.read_job_record(tmp_path / "job")
    assert record.status == records.FAILED and record.metrics["job_energy_joules"] > 0  # partial metrics kept
    (run,) = runs_of(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert run.info.status == "FAILED"
    assert run.data.tags["status"] == "FAILED"
    assert run.data.tags["error_type"] == "ConfigError"
    assert "line 2 is not JSON" in run.data.tags["error"]
    artifacts = {
        a.path for a in mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").list_artifacts(run.info.run_id)
    }
    assert "traceback.txt" in artifacts


def test_tracking_none_creates_no_store(tmp_path: Path) -> None:
    proc = run_main(*TINY, "tracking=none", f"hydra.run.dir={tmp_path / 'job'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlartifacts").exists()
    record = records.read_job_record(tmp_path / "job")
    assert record.status == records.COMPLETED and record.tracking == {"backend": "none"}
    assert (tmp_path / "job" / "resources.csv").is_file() and record.snapshot["git"]["commit"]


def test_a_dead_tracking_server_is_recorded_and_the_job_still_completes(tmp_path: Path) -> None:
    proc = run_main(
        *TINY,
        "tracking.uri=http://127.0.0.1:9",
        f"hydra.run.dir={tmp_path / 'job'}",
        cwd=tmp_path,
        env={"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = records.read_job_record(tmp_path / "job")
    assert record.status == records.COMPLETED
    assert any(e.startswith("mlflow: ") for e in record.callback_errors)


def test_a_dead_server_stops_a_sweep_at_once_or_leaves_every_run_pending(tmp_path: Path) -> None:
    """The store is checked before the first job: down, the sweep stops (exit 2); with ``tracking.required=false``
    the jobs complete and every record says its run is pending, for ``explaunch sync``."""
    sweep_dir = tmp_path / "sweep"
    args = ("-m", "experiment_type=probe", "seed=0,1", "hydra/launcher=basic", "tracking.uri=http://127.0.0.1:9")
    proc = run_main(*args, f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert not sweep_dir.exists() or {p.name for p in sweep_dir.iterdir()} <= {".sweep.lock"}  # no job folder
    assert "error: MLflow store http://127.0.0.1:9 cannot be written: no answer from the server" in proc.stderr
    proc = run_main(*args, "tracking.required=false", f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"explaunch sync {sweep_dir} --tracking-uri http://127.0.0.1:9" in proc.stderr
    found = list(records.iter_job_records(sweep_dir))
    assert len(found) == 2
    for _, record in found:
        assert record.status == records.COMPLETED and record.tracking["logged_by"] == "sweep"
        assert record.tracking["pending"] is True and "run_id" not in record.tracking


def test_snapshot_has_the_commit_and_the_uncommitted_diff(tmp_path: Path) -> None:
    """A user's own repository: a copy of the app, committed, then edited without committing."""
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(ROOT / "main.py", repo / "main.py")
    shutil.copytree(ROOT / "conf", repo / "conf")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "add", "."], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "app"], cwd=repo, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    with (repo / "conf" / "config.yaml").open("a") as handle:
        handle.write("# an uncommitted edit\n")

    proc = run_main(*TINY, f"hydra.run.dir={tmp_path / 'job'}", cwd=repo, main=repo / "main.py")
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = records.read_job_record(tmp_path / "job")
    assert record.snapshot["git"]["commit"] == head and record.snapshot["git"]["dirty"]
    assert "+# an uncommitted edit" in (tmp_path / "job" / "git.patch").read_text()
    (run,) = runs_of(f"sqlite:///{repo / 'mlflow.db'}")
    assert run.data.tags["mlflow.source.git.commit"] == head
    assert "git.patch" in {
        a.path for a in mlflow.MlflowClient(f"sqlite:///{repo / 'mlflow.db'}").list_artifacts(run.info.run_id)
    }


def test_a_job_logging_its_own_run_tags_it_and_records_its_cpu_efficiency(tmp_path: Path) -> None:
    """A single run (as a SLURM job) logs its own run: the user's tags from its start, its efficiency in its record."""
    job_dir = tmp_path / "job"
    proc = run_main("experiment_type=probe", "+tags.stage=tested", f"hydra.run.dir={job_dir}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = records.read_job_record(job_dir)
    assert record.tags == {"stage": "tested"} and record.callback_errors == []
    run = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(record.tracking["run_id"])
    assert run.data.tags["stage"] == "tested" and run.data.tags["status"] == "COMPLETED"
    efficiency = record.resources["efficiency"]
    assert "joblib" not in efficiency["cpus_basis"]  # a single run has no launcher: every core of its affinity
    assert efficiency["cpu_efficiency"] == pytest.approx(
        efficiency["cpu_seconds"] / (efficiency["wall_s"] * efficiency["cpus_allocated"])
    )
    assert 0 <= record.metrics["cpu_efficiency"] < 0.9  # a probe sleeps
    assert run.data.metrics["cpu_efficiency"] == pytest.approx(record.metrics["cpu_efficiency"])
