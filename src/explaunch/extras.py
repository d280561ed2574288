"""What each experiment type needs beyond the core install, and the one-line error when it is missing.

The core (``pip install explaunch``) holds the Hydra plugins, recording, records, review and the dashboard; the
experiment types that run models need an extra (``pip install 'explaunch[llm]'``). The check runs with the config's
validation, so a sweep stops before any job, and it only looks for the packages (``importlib.util.find_spec``):
nothing heavy is imported here.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from explaunch.errors import ConfigError

# experiment type -> (extra, the top-level packages it needs)
EXPERIMENT_EXTRAS: dict[str, tuple[str, tuple[str, ...]]] = {
    "llm_inference": ("llm", ("torch", "transformers", "tokenizers")),
    "fairness_tradeoff": ("fairness", ("torch",)),
    "yolo_train": ("yolo", ("torch", "torchvision", "ultralytics")),
    "yolo_val": ("yolo", ("torch", "torchvision", "ultralytics")),
}
SHARDING_EXTRA = ("llm", ("torch",))  # sharding=ddp/fsdp: torch.distributed


def missing(packages: tuple[str, ...]) -> list[str]:
    return [name for name in packages if importlib.util.find_spec(name) is None]


def require(key: str, value: Any, extra: str, packages: tuple[str, ...]) -> None:
    """Raise the one-line error naming the extra when one of ``packages`` is not installed."""
    absent = missing(packages)
    if absent:
        raise ConfigError(
            key,
            value,
            f"needs {', '.join(absent)}, not installed here: pip install 'explaunch[{extra}]' (or explaunch[all])",
        )


def check(experiment_type: str, sharding: str) -> None:
    """The packages an experiment type (and a multi-process sharding) needs are installed, or one line says which
    extra brings them."""
    if experiment_type in EXPERIMENT_EXTRAS:
        extra, packages = EXPERIMENT_EXTRAS[experiment_type]
        require("experiment_type", experiment_type, extra, packages)
    if sharding != "none":
        require("sharding", sharding, *SHARDING_EXTRA)
