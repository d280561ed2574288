"""explaunch: Hydra sweeps of ML experiments with measured speed, energy and complete records."""

__version__ = "0.1.0"

import os
from typing import TYPE_CHECKING, Any

# explaunch works offline: MLflow's usage telemetry (on by default since MLflow 3: it fetches a config and posts
# events from a thread) stays off in every explaunch process and the jobs it starts, unless the user sets it.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

if TYPE_CHECKING:
    from explaunch.api import SweepResult, load_sweep, sweep
    from explaunch.tracking.reader import RunSummary, get_best_run, load_model

__all__ = ["RunSummary", "SweepResult", "__version__", "get_best_run", "load_model", "load_sweep", "sweep"]


def __getattr__(name: str) -> Any:
    """``explaunch.sweep`` / ``load_sweep`` / ``get_best_run`` / ``load_model`` / ..., imported on first use (the
    CLI starts fast)."""
    if name in ("RunSummary", "get_best_run", "load_model"):
        from explaunch.tracking import reader as runs_api

        return getattr(runs_api, name)
    if name in ("SweepResult", "load_sweep", "sweep"):
        from explaunch import api

        return getattr(api, name)
    raise AttributeError(f"module 'explaunch' has no attribute {name!r}")
