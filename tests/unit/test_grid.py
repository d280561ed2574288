"""The sweep's grid is Hydra's basic sweeper's, made with Hydra's public override API (explaunch.launch.plan)."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException

from explaunch.launch.plan import SweepPlan
from tests.conftest import CONF_DIR


@pytest.fixture
def loader() -> Iterator[Any]:
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        yield GlobalHydra.instance().config_loader()


@pytest.mark.parametrize(
    ("arguments", "params"),
    [
        (["model=llama,mistral", "batch=8,16,32"], {}),
        (["seed=range(0,5)", "lam=0.1,0.2", "hardware=cpu"], {}),
        (["model=glob(*)", "seed=1"], {}),
        (["seed=1,2", "seed=3,4,5"], {}),  # given twice: the last one counts, in the first one's place
        (["batch=8"], {"seed": "range(3)", "model": "llama,mistral"}),  # hydra.sweeper.params, then the command line
        (["+extra=a,b", "model=mistral"], {"model": "llama,mistral"}),
        ([], {}),
    ],
)
def test_the_grid_is_the_one_hydras_basic_sweeper_expands(
    arguments: list[str], params: dict[str, str], loader: Any
) -> None:
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper  # the reference, in the test only

    plan: Any = SimpleNamespace(loader=loader)
    ours = SweepPlan.expand(plan, arguments, params)
    parsed = OverridesParser.create(config_loader=loader).parse_overrides(
        [*(f"{k}={v}" for k, v in params.items()), *arguments]
    )
    assert ours == BasicSweeper.split_arguments(parsed, None)[0]


def test_a_sweep_the_basic_sweeper_cannot_expand_is_refused_naming_the_key(loader: Any) -> None:
    plan: Any = SimpleNamespace(loader=loader)
    with pytest.raises(HydraException, match=r"does not support sweep type : INTERVAL_SWEEP \(in lam\)"):
        SweepPlan.expand(plan, ["lam=interval(0,1)"], {})
