"""explaunch: Hydra sweeps of ML experiments with measured speed, energy and complete records."""

__version__ = "0.1.0"

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from explaunch.runs_api import RunSummary, get_best_run, load_model

__all__ = ["RunSummary", "__version__", "get_best_run", "load_model"]


def __getattr__(name: str) -> Any:
    """``explaunch.get_best_run`` / ``load_model`` / ``RunSummary``, imported on first use (the CLI starts fast)."""
    if name in ("RunSummary", "get_best_run", "load_model"):
        from explaunch import runs_api

        return getattr(runs_api, name)
    raise AttributeError(f"module 'explaunch' has no attribute {name!r}")
