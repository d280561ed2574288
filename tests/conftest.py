from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from explaunch.config import register_configs

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
MAIN = ROOT / "main.py"

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
register_configs(ROOT)


# The bad inputs users make most (issue 3), with the one line each must get.
BAD_INPUTS = [
    ("batch=0", "batch=0: must be an integer >= 1"),
    ("batch=abc", "batch=abc: Value 'abc' of type 'str' could not be converted to Integer"),
    ("model=gpt9", "model=gpt9: no such option in group 'model'; allowed: llama, mistral"),
    ("hardware=tpu", "hardware=tpu: no such option in group 'hardware'; allowed: auto, cpu, gpu"),
    ("seed=-1", "seed=-1: must be an integer >= 0"),
    ("batching.max_new_tokens=-1", "batching.max_new_tokens=-1: must be an integer >= 1"),
]


def compose_config(*overrides: str) -> DictConfig:
    """The job config Hydra would compose for these overrides (no ``hydra`` node)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.fixture(autouse=True)
def _clear_hydra() -> Iterator[None]:
    yield
    GlobalHydra.instance().clear()


# Third-party warnings we cannot act on. As marks they also hold under `pytest -W error`, which would override the
# ini's filterwarnings; every other warning stays an error.
THIRD_PARTY_WARNINGS = (
    "ignore::sqlalchemy.exc.SADeprecationWarning",  # MLflow's ORM models on SQLAlchemy 2.1
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for spec in THIRD_PARTY_WARNINGS:
            item.add_marker(pytest.mark.filterwarnings(spec))
