"""``explaunch clean`` over stores and sweep folders that real sweeps made: a file store (``mlruns/``) with a
hand-broken experiment folder and a deleted experiment, the default sqlite store with a deleted run, and a sweep
whose only job failed."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities import ViewType

from explaunch.cli import main
from explaunch.sweepdir import records
from explaunch.tracking import cleanup as cleaning
from tests.integration.helpers import run_main

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Workspace:
    cwd: Path
    file_store: Path  # probe sweep of 2 jobs logged here
    sqlite: str  # the failed sweep's run logged here (the default store)
    good_sweep: Path
    failed_sweep: Path


def age(folder: Path, seconds: float) -> None:
    """Make every file in ``folder`` look last written ``seconds`` ago (a sweep that is not running any more)."""
    then = time.time() - seconds
    for path in [folder, *folder.rglob("*")]:
        os.utime(path, (then, then))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """Made once for the module: its tests touch different parts (the file store and multirun/, or the sqlite store)."""
    tmp_path = tmp_path_factory.mktemp("clean")
    good, failed = tmp_path / "multirun" / "2025-01-01" / "good", tmp_path / "multirun" / "2025-01-02" / "failed"
    proc = run_main(
        "-m",
        "experiment_type=probe",
        "seed=0,1",
        f"tracking.uri={tmp_path / 'mlruns'}",
        "hydra.launcher.n_jobs=1",
        f"hydra.sweep.dir={good}",
        cwd=tmp_path,
        env={"MLFLOW_ALLOW_FILE_STORE": "true"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run_main(
        "-m", "experiment_type=probe", "experiment_type.fail=raise", "seed=0", f"hydra.sweep.dir={failed}", cwd=tmp_path
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    return Workspace(tmp_path, tmp_path / "mlruns", f"sqlite:///{tmp_path / 'mlflow.db'}", good, failed)


@pytest.fixture(autouse=True)
def _file_store_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")


def file_store_with_damage(ws: Workspace) -> tuple[Path, str]:
    """A hand-broken experiment folder (its meta.yaml deleted) and a deleted experiment with a run."""
    client = MlflowClient(str(ws.file_store))
    broken = client.create_experiment("broken")
    client.create_run(broken)
    (ws.file_store / broken / "meta.yaml").unlink()
    doomed = client.create_experiment("doomed")
    client.create_run(doomed)
    client.delete_experiment(doomed)
    return ws.file_store / broken, doomed


def kinds(plan: cleaning.Plan) -> set[tuple[str, str]]:
    return {(c.kind, c.target) for c in plan.candidates}


def test_clean_finds_a_broken_folder_and_a_deleted_experiment_and_removes_them_only_with_force(
    workspace: Workspace, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    ws = workspace
    broken, doomed = file_store_with_damage(ws)
    caplog.set_level(logging.WARNING)
    MlflowClient(str(ws.file_store)).search_experiments()
    assert any(f"Malformed experiment '{broken.name}'" in r.getMessage() for r in caplog.records)  # the damage is real
    args = ["clean", "--tracking-uri", str(ws.file_store), "--multirun", str(ws.cwd / "multirun")]
    recent = cleaning.find([], [ws.cwd / "multirun"], days_old=None)  # the failed sweep has just been written
    assert recent.candidates == []
    assert recent.kept[0].startswith(f"{ws.failed_sweep}: no completed job, but written to ")
    age(ws.failed_sweep, 2 * cleaning.ACTIVE_WINDOW_S)

    assert main(args) == 0
    out = capsys.readouterr().out
    assert "would remove (4):" in out and "dry run: nothing removed" in out
    lines = out.splitlines()

    def listed(kind: str, target: object, why: str) -> bool:
        return any(line.startswith(kind) and f" {target} " in line and line.endswith(why) for line in lines)

    assert listed("orphaned experiment", broken, "no meta.yaml")
    assert listed("deleted experiment", doomed, "deleted")
    assert listed("deleted run", "", "deleted")  # the deleted experiment's run
    assert listed("sweep without a completed job", ws.failed_sweep, "1 job records, none completed")
    assert ws.good_sweep.is_dir()  # it has completed jobs
    assert broken.is_dir() and (ws.file_store / ".trash" / doomed).is_dir() and ws.failed_sweep.is_dir()

    backup = tmp_path / "backup"
    assert main([*args, "--force", "--backup", str(backup)]) == 0
    assert "done: 4 removed" in capsys.readouterr().out
    assert not broken.exists() and not (ws.file_store / ".trash" / doomed).exists() and not ws.failed_sweep.exists()
    assert (backup / "stores" / "mlruns" / broken.name).is_dir()
    assert (backup / "stores" / "mlruns" / doomed / "meta.yaml").is_file()
    assert records.read_job_record(backup / "multirun" / "2025-01-02" / "failed" / "0").status == "failed"

    caplog.clear()
    client = MlflowClient(str(ws.file_store))
    names = {e.name: e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)}
    assert set(names) == {"Default", "explaunch"}
    assert not [r for r in caplog.records if "Malformed" in r.getMessage()]  # the store opens cleanly
    assert len(client.search_runs([names["explaunch"]])) == 3  # the 2 jobs and their sweep run stay


def test_clean_removes_deleted_runs_of_a_sqlite_store_the_way_mlflow_gc_does(
    workspace: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    ws = workspace
    client = MlflowClient(ws.sqlite)
    experiment = client.get_experiment_by_name("explaunch")
    assert experiment is not None
    (failed_job,) = client.search_runs([experiment.experiment_id], "tags.status = 'FAILED'")
    artifacts = Path(failed_job.info.artifact_uri.removeprefix("file://"))
    assert (artifacts / "traceback.txt").is_file()
    client.delete_run(failed_job.info.run_id)

    assert main(["clean", "--tracking-uri", ws.sqlite, "--json"]) == 0
    dry = json.loads(capsys.readouterr().out)
    assert [(c["kind"], c["target"]) for c in dry["candidates"]] == [(cleaning.DELETED_RUN, failed_job.info.run_id)]
    assert dry["removed"] == [] and dry["dry_run"] is True
    assert main(["clean", "--tracking-uri", ws.sqlite, "--force"]) == 0
    out = capsys.readouterr().out
    assert f"deleted run  {failed_job.info.run_id}" in out
    runs = client.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL)
    assert [r.info.run_name for r in runs] == ["sweep 2025-01-02/failed"]  # the sweep's run stays
    assert not artifacts.exists()  # gc removed the run's artifacts too

    assert cleaning.find([ws.sqlite], [], days_old=1).candidates == []
    later = time.time() + 2 * 86400  # two days from now every run started over a day ago
    plan = cleaning.find([ws.sqlite], [], days_old=1, now=later)
    assert kinds(plan) == {(cleaning.OLD_RUN, runs[0].info.run_id)}
    cleaning.remove(plan)
    assert client.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL) == []


def test_clean_bad_input_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["clean", "--tracking-uri", "http://127.0.0.1:5000"]) == 1
    assert capsys.readouterr().err.startswith("error: --tracking-uri http://127.0.0.1:5000: clean works on the store")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["clean"]) == 1
    assert capsys.readouterr().err.startswith("error: nothing to clean here: no ./mlflow.db, ./mlruns or ./multirun")
