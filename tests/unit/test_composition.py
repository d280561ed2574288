"""The planner's shared compositions are the configs Hydra itself would compose for each job (the basic and joblib
launchers run them as they are)."""

from __future__ import annotations

from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from explaunch.launch.composition import JobComposer
from tests.conftest import CONF_DIR


@pytest.mark.parametrize(
    "overrides",
    [
        ["seed=3"],
        ["model=mistral", "seed=3", "batch=16"],
        ["experiment_type=probe", "experiment_type.duration_s=0.5", "lam=0.2", "seed=1"],
        ["batch=4", "model=mistral", "+params.lr=0.1"],
    ],
)
def test_a_shared_composition_equals_hydras_own(overrides: list[str]) -> None:
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        loader: Any = GlobalHydra.instance().config_loader()
        master = compose("config", overrides=[], return_hydra_config=True)
        composer = JobComposer(lambda o: loader.load_sweep_config(master, o), loader)
        composer(["seed=99", *[o for o in overrides if not o.startswith(("seed", "batch", "lam"))]])  # warm cache
        ours = composer(list(overrides))
        hydras = loader.load_sweep_config(master, list(overrides))
    assert OmegaConf.to_container(ours, resolve=False) == OmegaConf.to_container(hydras, resolve=False)
    assert list(ours.hydra.overrides.task) == overrides
