"""``yolo_val``: a YOLO model from the MLflow store evaluated with ultralytics' ``val``, without training.

The model is a registered version (``model_uri=models:/NAME/VERSION``), a run's artifact folder
(``model_uri=runs:/RUN_ID/artifacts/model``) or the best completed job of a sweep folder by a metric (``best_of``,
``metric``, ``mode``): :mod:`explaunch.tracking.models` resolves it (before any job starts, when the config is
checked) and downloads it into the job folder (``source_model/``). The data are ``data`` (a dataset YAML on disk) or
the set ``yolo_train`` generates from the same seed and sizes, so that its val split is the one the model was
validated on while it trained. The metrics are those ultralytics' ``val`` returns (precision, recall, mAP50,
mAP50_95, fitness) and its per-image speeds; the source run is in the config (``experiment_type.source_run_id``,
``experiment_type.source_model_uri``: MLflow params of the job's run) and in the record's ``info``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from explaunch.config import ExplaunchConfig
from explaunch.experiments.base import ExperimentResult
from explaunch.experiments.yolo_train import make_dataset, prepare_offline
from explaunch.redaction import strip_url_credentials
from explaunch.tracking import models


def metric_name(key: str) -> str:
    """``metrics/mAP50-95(B)`` -> ``mAP50_95``, as yolo_train names its epoch metrics."""
    return key.replace("metrics/", "").replace("(B)", "").replace("/", "_").replace("-", "_")


def weights_in(folder: Path) -> Path:
    """``best.pt`` of a model folder, else its first ``.pt`` (a single file downloaded is its own weights)."""
    if folder.is_file():
        return folder
    found = sorted(folder.rglob("*.pt"))
    best = [p for p in found if p.name == "best.pt"]
    if not (best or found):
        raise FileNotFoundError(f"no YOLO weights (*.pt) in the downloaded model {folder}")
    return (best or found)[0]


def run(config: ExplaunchConfig, job_dir: Path) -> ExperimentResult:
    spec = config.experiment_type
    prepare_offline(job_dir / "ultralytics_settings")
    source = models.resolve_cached(spec.store, spec.model_uri, spec.best_of, spec.metric, spec.mode, str(Path.cwd()))
    weights = weights_in(models.download(source, job_dir / "source_model"))
    data = (
        Path(spec.data).expanduser()
        if spec.data
        else make_dataset(job_dir / "dataset", spec.n_train_images, spec.n_val_images, spec.imgsz, config.seed)
    )
    device = (
        "cpu" if config.hardware.device == "cpu" or not _cuda() else ",".join(map(str, config.hardware.gpu_ids or [0]))
    )
    model: Any = importlib.import_module("ultralytics").YOLO(str(weights))
    results = model.val(
        data=str(data), imgsz=spec.imgsz, batch=config.batch, device=device, workers=0, plots=False,
        half=config.hardware.mixed_precision != "no" and device != "cpu", project=str(job_dir), name="val",
        exist_ok=True, verbose=False,
    )  # fmt: skip
    metrics = {metric_name(str(k)): float(v) for k, v in results.results_dict.items()}
    metrics.update({f"speed_{k}_ms_per_image": float(v) for k, v in results.speed.items()})
    names = dict(results.names)
    info: dict[str, Any] = {
        "source_run_id": source.run_id,
        "source_model_uri": source.model_uri,
        "source_store": strip_url_credentials(source.store),
        "weights": str(weights.relative_to(job_dir)) if weights.is_relative_to(job_dir) else str(weights),
        "data": str(data),
        "device": device,
        "classes": {str(i): str(n) for i, n in names.items()},
        "mAP50_95_per_class": {str(names[int(i)]): float(results.maps[int(i)]) for i in results.ap_class_index},
    }
    if source.job_dir is not None:
        info["source_job"] = {"job_dir": source.job_dir, spec.metric: source.metric_value, "mode": spec.mode}
    return ExperimentResult(metrics=metrics, info=info)


def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())
