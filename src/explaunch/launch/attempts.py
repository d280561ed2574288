"""A job's attempts: what an earlier attempt left is moved to ``attempts/<k>/`` before the job runs again in its
folder, the job's final record lists those attempts, and an out-of-memory retry gets its half batch."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from explaunch.errors import RecordError
from explaunch.launch.settings import ATTEMPT_FILES, ATTEMPTS_DIR
from explaunch.sweepdir import records


def with_batch(overrides: list[str], size: int, cfg: DictConfig) -> list[str]:
    """``overrides`` with the job's batch size set to ``size``: through ``batch`` when batching follows it."""
    key = "batch" if OmegaConf.select(cfg, "batch") == OmegaConf.select(cfg, "batching.batch_size") else None
    key = key or "batching.batch_size"
    kept = [o for o in overrides if o.lstrip("+").partition("=")[0] != key]
    return [*kept, f"{key}={size}"]


def earlier_attempts(job_dir: Path) -> list[dict[str, Any]]:
    """One summary per archived attempt, oldest first, read from ``attempts/<k>/record.json``."""
    found = []
    for folder in sorted((job_dir / ATTEMPTS_DIR).iterdir(), key=lambda p: int(p.name) if p.name.isdigit() else 0):
        try:
            record = records.read_job_record(folder / "record.json")
        except RecordError:
            continue
        found.append(
            {
                "attempt": int(folder.name) if folder.name.isdigit() else folder.name,
                "status": record.status,
                "overrides": record.overrides,
                "batch_size": record.config.get("batching", {}).get("batch_size"),
                "error_type": record.error.type if record.error else None,
                "error": record.error.message if record.error else None,
                "duration_s": record.duration_s,
                "files": f"{ATTEMPTS_DIR}/{folder.name}",
            }
        )
    return found


def archive_attempt(job_dir: Path) -> None:
    """Move what an earlier attempt left in ``job_dir`` to ``attempts/<k>/`` (its ``job.json`` as ``record.json``,
    so that only the latest attempt counts as the job's record)."""
    if not (job_dir / records.JOB_FILE).exists():
        return
    from explaunch.callbacks import deferred

    deferred.flush()  # the MLflow relay has logged that attempt (it reads and updates its record)
    previous = job_dir / ATTEMPTS_DIR
    k = 1
    while (previous / str(k)).exists():
        k += 1
    target = previous / str(k)
    target.mkdir(parents=True)
    for pattern in ATTEMPT_FILES:
        for path in job_dir.glob(pattern):
            name = "record.json" if path.name == records.JOB_FILE else path.name
            shutil.move(str(path), str(target / name))
