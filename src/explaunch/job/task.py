"""The task every job runs: validate the config, seed, hand over to the experiment type."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from explaunch import experiments
from explaunch.config import validate
from explaunch.job.seeding import seed_everything


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run one job; the returned dict (``metrics``, ``info``) becomes part of the job record."""
    config = validate(cfg)
    job_dir = Path(HydraConfig.get().runtime.output_dir)
    experiment = experiments.load(config.experiment_type.name)  # imports what it needs (torch) before seeding
    seed_everything(config.seed, deterministic=config.deterministic)
    return experiment(config, job_dir).to_dict()
