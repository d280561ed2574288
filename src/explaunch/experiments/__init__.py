"""Experiment types. Each module has ``run(config, job_dir) -> ExperimentResult``; the task picks one by name."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from explaunch.config import ExplaunchConfig
    from explaunch.experiments.base import ExperimentResult

MODULES = {
    "llm_inference": "explaunch.experiments.llm_inference",
    "probe": "explaunch.experiments.probe",
    "fairness_tradeoff": "explaunch.experiments.fairness_tradeoff",
    "script": "explaunch.experiments.script",
    "yolo_train": "explaunch.experiments.yolo_train",
    "yolo_val": "explaunch.experiments.yolo_val",
}


def load(name: str) -> Callable[[ExplaunchConfig, Path], ExperimentResult]:
    """The ``run`` function of experiment type ``name`` (imported only now: experiments import torch)."""
    module = importlib.import_module(MODULES[name])
    run: Callable[[ExplaunchConfig, Path], ExperimentResult] = module.run
    return run
