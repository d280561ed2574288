"""``yolo_train``: ultralytics YOLO trained offline, recorded and registered like any other job.

By default the model is built from a model YAML (``yolo11n.yaml``: no weights, no download) and trained on a small
detection dataset the job generates (coloured squares and discs on noise, with YOLO labels and a dataset YAML). A
user with a real dataset YAML and pretrained weights on disk points ``data`` and ``model`` at them. Ultralytics runs
offline: its settings live in a folder of the job, its own MLflow callback is off (explaunch logs the run), and the
font its plots ask for is the one matplotlib ships, copied where it looks.
"""

from __future__ import annotations

import csv
import importlib
import os
import random
import shutil
from pathlib import Path
from typing import Any

from explaunch.config import ExplaunchConfig
from explaunch.experiments.base import ExperimentResult

CLASSES = ("square", "disc")


def make_dataset(root: Path, n_train: int, n_val: int, size: int, seed: int) -> Path:
    """Images of ``size`` x ``size`` with 1-3 objects each; returns the dataset YAML."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    for split, count in (("train", n_train), ("val", n_val)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            image = Image.new("RGB", (size, size), tuple(rng.randrange(40, 90) for _ in range(3)))
            draw = ImageDraw.Draw(image)
            lines = []
            for _ in range(rng.randint(1, 3)):
                cls = rng.randrange(len(CLASSES))
                w = h = rng.randint(size // 6, size // 3)
                x0, y0 = rng.randint(0, size - w - 1), rng.randint(0, size - h - 1)
                colour = (220, 60, 60) if cls == 0 else (60, 200, 220)
                (draw.rectangle if cls == 0 else draw.ellipse)([x0, y0, x0 + w, y0 + h], fill=colour)
                lines.append(f"{cls} {(x0 + w / 2) / size:.6f} {(y0 + h / 2) / size:.6f} {w / size:.6f} {h / size:.6f}")
            image.save(root / "images" / split / f"{index:04d}.png")
            (root / "labels" / split / f"{index:04d}.txt").write_text("\n".join(lines) + "\n")
    data = root / "data.yaml"
    names = "\n".join(f"  {i}: {name}" for i, name in enumerate(CLASSES))
    data.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n{names}\n")
    return data


def prepare_offline(settings_dir: Path) -> None:
    """Ultralytics without network: its config dir here, the font it wants present, sync and its MLflow off."""
    import matplotlib

    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_CONFIG_DIR"] = str(settings_dir)
    font = settings_dir / "Ultralytics" / "Arial.ttf"
    font.parent.mkdir(parents=True, exist_ok=True)
    if not font.exists():
        shutil.copy(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf", font)
    settings: Any = importlib.import_module("ultralytics").settings
    settings.update({"sync": False, "mlflow": False, "clearml": False, "comet": False, "dvc": False, "wandb": False})


def epoch_series(results_csv: Path) -> dict[str, list[list[float]]]:
    """Every numeric column of ultralytics' results.csv, as [epoch, value] pairs (epochs counted from 1)."""
    with results_csv.open(newline="") as handle:
        rows = [{k.strip(): v.strip() for k, v in row.items()} for row in csv.DictReader(handle)]
    series: dict[str, list[list[float]]] = {}
    for row in rows:
        epoch = float(row["epoch"])
        for key, value in row.items():
            if key == "epoch":
                continue
            name = key.replace("metrics/", "").replace("(B)", "").replace("/", "_").replace("-", "_")
            try:
                series.setdefault(name, []).append([epoch, float(value)])
            except ValueError:
                continue
    return series


def load_registered(name: str, version: str, tracking_uri: str) -> Any:
    """The YOLO model of a registered version, loaded back from the MLflow registry."""
    from explaunch.tracking.reader import registered_model_folder

    folder = registered_model_folder(name, version, tracking_uri)
    return importlib.import_module("ultralytics").YOLO(str(folder / "best.pt"))


def run(config: ExplaunchConfig, job_dir: Path) -> ExperimentResult:
    spec = config.experiment_type
    prepare_offline(job_dir / "ultralytics_settings")
    yolo: Any = importlib.import_module("ultralytics").YOLO

    data = (
        Path(spec.data).expanduser()
        if spec.data
        else make_dataset(job_dir / "dataset", spec.n_train_images, spec.n_val_images, spec.imgsz, config.seed)
    )
    model = yolo(spec.model)
    device = (
        "cpu" if config.hardware.device == "cpu" or not _cuda() else ",".join(map(str, config.hardware.gpu_ids or [0]))
    )
    model.train(
        data=str(data), epochs=spec.epochs, imgsz=spec.imgsz, batch=config.batch, device=device, workers=0,
        amp=config.hardware.mixed_precision != "no", plots=False, project=str(job_dir), name="train", exist_ok=True,
        seed=config.seed, deterministic=config.deterministic, verbose=False,
    )  # fmt: skip
    save_dir = Path(model.trainer.save_dir)
    artifacts = job_dir / "artifacts"
    (artifacts / "model").mkdir(parents=True, exist_ok=True)  # the registered model version is this folder
    best = save_dir / "weights" / "best.pt"
    if best.exists():
        shutil.copy2(best, artifacts / "model" / "best.pt")
    shutil.copy2(save_dir / "results.csv", artifacts / "results.csv")
    series = epoch_series(save_dir / "results.csv")
    metrics = {name: points[-1][1] for name, points in series.items()}
    metrics["epochs"] = float(spec.epochs)
    info: dict[str, Any] = {
        "series": series,
        "data": str(data),
        "model": spec.model,
        "weights": "from model YAML (random init)" if spec.model.endswith((".yaml", ".yml")) else spec.model,
        "device": device,
    }
    if spec.register_as and best.exists():
        info["register_model"] = {"name": spec.register_as, "artifact_path": "artifacts/model"}
    return ExperimentResult(metrics=metrics, info=info)


def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())
