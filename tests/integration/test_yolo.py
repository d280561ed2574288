"""A YOLO job of one epoch on the generated set: metrics per epoch, artifacts, a registered model loadable back."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from explaunch.experiments.yolo_train import load_registered
from explaunch.sweepdir import records
from tests.integration.helpers import run_main

pytestmark = pytest.mark.slow


def test_yolo_job_records_metrics_artifacts_and_a_registered_model(tmp_path: Path) -> None:
    proc = run_main("experiment_type=yolo_train", f"hydra.run.dir={tmp_path / 'job'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = records.read_job_record(tmp_path / "job")
    assert record.status == "completed"
    for name in ("train_box_loss", "train_cls_loss", "mAP50", "mAP50_95", "precision", "recall"):
        assert name in record.metrics, name
    registered = record.tracking["registered_model"]
    assert registered == {"name": "explaunch-yolo", "version": "1"}

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    run = client.get_run(record.tracking["run_id"])
    history = client.get_metric_history(run.info.run_id, "train_box_loss")
    assert [m.step for m in history] == [1]  # step = epoch
    assert {a.path for a in client.list_artifacts(run.info.run_id, "artifacts")} >= {
        "artifacts/model",
        "artifacts/results.csv",
    }
    (version,) = client.search_model_versions("name='explaunch-yolo'")
    assert version.run_id == run.info.run_id  # the registered version is linked to the job's run
    model = load_registered("explaunch-yolo", "1", uri)
    assert type(model).__name__ == "YOLO" and model.names == {0: "square", 1: "disc"}
