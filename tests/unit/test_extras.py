from __future__ import annotations

import pytest

from explaunch import extras
from explaunch.errors import ConfigError


def test_a_missing_package_names_the_extra_that_brings_it() -> None:
    with pytest.raises(ConfigError) as caught:
        extras.require("experiment_type", "llm_inference", "llm", ("json", "explaunch_no_such_package"))
    line = str(caught.value)
    assert line.startswith("experiment_type=llm_inference: needs explaunch_no_such_package, not installed here")
    assert "pip install 'explaunch[llm]'" in line
    assert "\n" not in line


def test_what_is_installed_passes_and_types_without_an_extra_need_nothing() -> None:
    extras.require("experiment_type", "x", "llm", ("json",))
    extras.check("probe", "none")
    extras.check("script", "none")


def test_every_experiment_type_that_needs_an_extra_is_a_real_one_and_every_extra_is_declared() -> None:
    import tomllib

    from explaunch.experiments import MODULES
    from tests.conftest import ROOT

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for name, (extra, packages) in extras.EXPERIMENT_EXTRAS.items():
        assert name in MODULES
        assert extra in declared
        assert packages
