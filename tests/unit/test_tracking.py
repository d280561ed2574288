from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from explaunch.redaction import REDACTED
from explaunch.tracking.store import SweepTracking, resolve_uri
from explaunch.tracking.sweeprun import start_sweep
from explaunch.tracking.writer import MlflowTracker, artifact_root, flatten, params_from_config


@pytest.fixture
def store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_flatten_makes_dotted_keys() -> None:
    assert flatten({"model": {"name": "llama", "sizes": [1, 2]}, "seed": 0}) == {
        "model.name": "llama",
        "model.sizes": [1, 2],
        "seed": 0,
    }


def test_params_are_strings_with_secrets_redacted() -> None:
    params = params_from_config({"tracking": {"api_key": "k-123"}, "batch": 8, "ids": [0, 1], "x": "y" * 7000})
    assert params == {"tracking.api_key": REDACTED, "batch": "8", "ids": "[0, 1]", "x": "y" * 6000}


def test_uri_comes_from_config_then_env_then_the_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_uri(None, tmp_path) == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert resolve_uri("sqlite:///rel/m.db", tmp_path) == f"sqlite:///{tmp_path / 'rel' / 'm.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert resolve_uri(None, tmp_path) == "http://127.0.0.1:5000"
    assert resolve_uri("sqlite:////abs/m.db", tmp_path) == "sqlite:////abs/m.db"
    assert artifact_root("sqlite:////abs/m.db") == "file:///abs/mlartifacts"
    assert artifact_root("http://127.0.0.1:5000") is None


def test_runs_nest_and_batches_respect_mlflow_limits(store: str, tmp_path: Path) -> None:
    tracker = MlflowTracker(store)
    experiment = tracker.experiment_id("exp")
    assert tracker.experiment_id("exp") == experiment  # reused, not duplicated
    parent = tracker.start_run(experiment, "sweep", {"kind": "sweep"})
    child = tracker.start_run(experiment, "job", {"HF_TOKEN": "sekrit"}, parent_run_id=parent)
    params = {f"p{i}": str(i) for i in range(250)}
    metrics = {f"m{i}": float(i) for i in range(1500)}
    tracker.log(child, params=params, metrics=metrics, tags={"status": "completed"})
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "job.json").write_text("{}")
    (tmp_path / "job" / ".hydra").mkdir()
    (tmp_path / "job" / ".hydra" / "config.yaml").write_text("a: 1")
    tracker.log_artifacts(child, [tmp_path / "job" / "job.json", tmp_path / "job" / ".hydra"], tmp_path / "job")
    tracker.finish(child, failed=True)

    run = tracker.client.get_run(child)
    assert run.data.tags["mlflow.parentRunId"] == parent
    assert run.data.tags["HF_TOKEN"] == REDACTED
    assert len(run.data.params) == 250 and len(run.data.metrics) == 1500
    assert run.info.status == "FAILED"
    assert sorted(a.path for a in tracker.client.list_artifacts(child)) == [".hydra", "job.json"]
    assert run.info.artifact_uri.startswith((tmp_path / "mlartifacts").as_uri())


def test_start_sweep_creates_the_store_and_leaves_ids_for_the_jobs(store: str, tmp_path: Path) -> None:
    sweep_dir = tmp_path / "multirun" / "2026-11-23" / "10-00-00"
    sweep_dir.mkdir(parents=True)
    assert not (tmp_path / "mlflow.db").exists()
    sweep = start_sweep(store, "explaunch", sweep_dir, {"sweep_dir": str(sweep_dir)})
    assert (tmp_path / "mlflow.db").exists()
    assert SweepTracking.read(sweep_dir) == sweep
    run = mlflow.MlflowClient(store).get_run(sweep.parent_run_id)
    assert run.info.run_name == "sweep 2026-11-23/10-00-00"
    assert run.info.status == "RUNNING"


def test_a_dead_server_fails_fast_instead_of_retrying_for_minutes() -> None:
    MlflowTracker("http://127.0.0.1:9")
    assert int(os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]) <= 2


@pytest.mark.parametrize(("given", "disabled"), [(None, "True"), ("false", "False")])
def test_mlflow_telemetry_is_off_in_explaunch_processes_unless_the_user_turns_it_on(
    given: str | None, disabled: str
) -> None:
    """Outside CI (no PYTEST_CURRENT_TEST, CI, ... in the environment) MLflow would send usage telemetry."""
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    if given is not None:
        env["MLFLOW_DISABLE_TELEMETRY"] = given
    code = "import explaunch.tracking.store, mlflow.telemetry.utils as u; print(u.is_telemetry_disabled())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == disabled, out.stderr


def test_only_the_tracking_package_imports_mlflow() -> None:
    """Issue 19: MLflow is used through explaunch.tracking alone (function-local imports included)."""
    import re

    src = Path(__file__).resolve().parents[2] / "src"
    pattern = re.compile(r"^\s*(import mlflow|from mlflow)", re.MULTILINE)
    importers = sorted(
        str(path.relative_to(src))
        for path in src.rglob("*.py")
        if "tracking" not in path.relative_to(src).parts[:2] and pattern.search(path.read_text(encoding="utf-8"))
    )
    assert importers == []


def test_a_jobs_run_carries_its_users_tags_and_a_tag_search_finds_it(store: str, tmp_path: Path) -> None:
    import dataclasses

    from explaunch.sweepdir import records
    from explaunch.tracking.reader import search, tag_filter
    from explaunch.tracking.writer import job_run_tags

    tracker = MlflowTracker(store)
    experiment = tracker.experiment_id("exp")
    other = tracker.experiment_id("other")
    job_dir = tmp_path / "0"
    record = records.JobRecord(
        status=records.COMPLETED,
        overrides=["+tags.stage=tested"],
        config={"seed": 0, "tags": {"stage": "tested"}},
        config_hash="h",
        start_time="2026-11-23T10:00:00+00:00",
        end_time="2026-11-23T10:00:01+00:00",
        duration_s=1.0,
        tags={"stage": "tested", "team": "it's ours", "status": "mine"},
    )
    records.write_job_record(job_dir, record)
    tags = job_run_tags(job_dir, "host", None, None, record.tags)
    assert tags["stage"] == "tested" and tags["status"] == "RUNNING"  # explaunch's own tag wins over the user's
    run_id = tracker.start_run(experiment, "job", tags)
    tracker.log_job(run_id, record, job_dir, artifacts=False)
    untagged = tracker.start_run(other, "job", {})
    tracker.log_job(untagged, dataclasses.replace(record, tags={}), job_dir, artifacts=False)

    run = tracker.client.get_run(run_id)
    assert run.data.tags["stage"] == "tested" and run.data.tags["team"] == "it's ours"
    assert run.data.tags["status"] == "COMPLETED"
    found = search(store, None, tag_filter({"stage": "tested", "team": "it's ours"}))  # every experiment
    assert [r.run_id for r in found] == [run_id]
    assert search(store, "other", tag_filter({"stage": "tested"})) == []
    assert tag_filter({"a.b/c-d": "x"}) == "tags.`a.b/c-d` = 'x'"
