"""``yolo_val``: a model from the MLflow store evaluated without training, named by a run's artifact, a registered
version or the best job of a sweep; its run records the metrics of ultralytics' val and the run it evaluated. Bad
input is one line and exit 2 before any job folder exists."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest

from explaunch.sweepdir import records
from tests.integration.helpers import run_main

pytestmark = [pytest.mark.slow, pytest.mark.extras]
REGISTERED = "yolo-val-test"
VAL_METRICS = ("precision", "recall", "mAP50", "mAP50_95")


@dataclass
class Trained:
    root: Path  # the folder the commands run from: its mlflow.db is the store
    sweep: Path
    run_ids: dict[int, str]  # job_num -> run id
    losses: dict[int, float]  # job_num -> train_box_loss

    @property
    def store(self) -> str:
        return f"sqlite:///{self.root / 'mlflow.db'}"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """A sweep of two tiny yolo_train jobs (nothing registered by them), then one run registered by hand."""
    root = tmp_path_factory.mktemp("yolo_val")
    sweep = root / "sweep"
    proc = run_main(
        "-m", "experiment_type=yolo_train", "seed=0,1", "experiment_type.register_as=null", f"hydra.sweep.dir={sweep}",
        cwd=root,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = {int(r.job_num or 0): r for _, r in records.iter_job_records(sweep)}
    assert sorted(jobs) == [0, 1] and all(r.status == records.COMPLETED for r in jobs.values())
    run_ids = {n: str(r.tracking["run_id"]) for n, r in jobs.items()}
    trained = Trained(root, sweep, run_ids, {n: r.metrics["train_box_loss"] for n, r in jobs.items()})
    client = mlflow.MlflowClient(trained.store, registry_uri=trained.store)
    client.create_registered_model(REGISTERED)
    source = f"{client.get_run(run_ids[1]).info.artifact_uri}/artifacts/model"
    version = client.create_model_version(REGISTERED, source=source, run_id=run_ids[1])
    assert str(version.version) == "1"
    return trained


def evaluate(trained: Trained, name: str, *overrides: str) -> records.JobRecord:
    job = trained.root / name
    proc = run_main("experiment_type=yolo_val", *overrides, f"hydra.run.dir={job}", cwd=trained.root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return records.read_job_record(job)


def check_evaluated(trained: Trained, record: records.JobRecord, source_run: str, source_uri: str) -> None:
    assert record.status == records.COMPLETED, record.error
    for name in VAL_METRICS:
        assert name in record.metrics, name
    assert "epochs" not in record.metrics and "train_box_loss" not in record.metrics  # nothing was trained
    assert record.info["source_run_id"] == source_run and record.info["source_model_uri"] == source_uri
    assert record.tags == {"source_run_id": source_run, "source_model_uri": source_uri}
    run = mlflow.MlflowClient(trained.store).get_run(record.tracking["run_id"])
    assert run.info.run_id not in trained.run_ids.values()  # a run of its own, not the trained one's
    assert run.data.tags["source_run_id"] == source_run
    assert run.data.tags["source_model_uri"] == source_uri
    assert run.data.params["experiment_type.source_run_id"] == source_run
    for name in VAL_METRICS:
        assert run.data.metrics[name] == pytest.approx(record.metrics[name]), name


def test_a_run_artifact_is_evaluated_and_linked_to_its_run(trained: Trained) -> None:
    uri = f"runs:/{trained.run_ids[0]}/artifacts/model"
    record = evaluate(trained, "val_run", f"experiment_type.model_uri={uri}")
    check_evaluated(trained, record, trained.run_ids[0], uri)
    assert (trained.root / "val_run" / record.info["weights"]).name == "best.pt"  # downloaded into the job folder


def test_the_best_job_of_a_sweep_is_evaluated(trained: Trained) -> None:
    best = min(trained.losses, key=lambda n: trained.losses[n])
    record = evaluate(
        trained, "val_best", f"experiment_type.best_of={trained.sweep}", "experiment_type.metric=train_box_loss",
        "experiment_type.mode=min",
    )  # fmt: skip
    check_evaluated(trained, record, trained.run_ids[best], f"runs:/{trained.run_ids[best]}/artifacts/model")
    assert record.info["source_job"]["train_box_loss"] == pytest.approx(trained.losses[best])


def test_a_registered_version_is_evaluated(trained: Trained) -> None:
    uri = f"models:/{REGISTERED}/1"
    record = evaluate(trained, "val_registered", f"experiment_type.model_uri={uri}")
    check_evaluated(trained, record, trained.run_ids[1], uri)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ((), "error: experiment_type.model_uri=null: give exactly one of experiment_type.model_uri"),
        (
            ("experiment_type.model_uri=models:/x/1", "experiment_type.best_of=SWEEP"),
            "error: experiment_type.model_uri=models:/x/1: give exactly one of",
        ),
        (("experiment_type.model_uri=models:/nope/1",), "no registered model 'nope' in the store sqlite:///"),
        ((f"experiment_type.model_uri=models:/{REGISTERED}/9",), f"'{REGISTERED}' has no version 9; versions: 1"),
        (("experiment_type.model_uri=runs:/0123abc/artifacts/model",), "no run 0123abc in the store"),
        (("experiment_type.model_uri=s3://bucket/model",), "must be models:/NAME/VERSION"),
        (("experiment_type.best_of=EMPTY", "experiment_type.metric=mAP50"), "not a sweep folder"),
        (("experiment_type.best_of=FAILED", "experiment_type.metric=mAP50"), "none of its 1 jobs completed"),
        (("experiment_type.best_of=SWEEP", "experiment_type.metric=nope"), "no completed job of"),
        (("experiment_type.best_of=SWEEP",), "error: experiment_type.metric=null: required with"),
        (
            ("experiment_type.best_of=SWEEP", "experiment_type.metric=mAP50", "experiment_type.mode=avg"),
            "error: experiment_type.mode=avg: allowed: max, min",
        ),
    ],
)
def test_bad_input_is_one_line_before_any_job(
    trained: Trained, tmp_path: Path, overrides: tuple[str, ...], expected: str
) -> None:
    (tmp_path / "empty").mkdir()
    failed = tmp_path / "failed" / "0"
    shutil.copytree(trained.sweep / "0", failed, ignore=shutil.ignore_patterns("dataset", "train"))
    data = json.loads((failed / "job.json").read_text())
    (failed / "job.json").write_text(json.dumps({**data, "status": "failed"}))
    folders = {"SWEEP": trained.sweep, "EMPTY": tmp_path / "empty", "FAILED": tmp_path / "failed"}
    given = list(overrides)
    for placeholder, folder in folders.items():
        given = [o.replace(f"={placeholder}", f"={folder}") for o in given]
    job = tmp_path / "job"
    proc = run_main("experiment_type=yolo_val", *given, f"hydra.run.dir={job}", cwd=trained.root, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not job.exists()
