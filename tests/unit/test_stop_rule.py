"""hydra.sweeper.stop_when: parsed with explaunch validate's expressions, checked with the sweeper settings."""

from __future__ import annotations

import pytest

from explaunch.errors import ConfigError
from explaunch.launch import stop_rule
from hydra_plugins.explaunch_plugins.config import ExplaunchSweeperConf

RULE = "accuracy >= 0.9 and demographic_parity_difference <= 0.05"


def test_a_rule_names_its_metrics_and_is_met_only_when_every_part_holds() -> None:
    rule = stop_rule.parse(RULE)
    assert rule.metrics == ["accuracy", "demographic_parity_difference"]
    assert rule.text == RULE
    assert rule.met({"accuracy": 0.93, "demographic_parity_difference": 0.01})
    assert rule.met({"accuracy": 0.9, "demographic_parity_difference": 0.05})  # bounds included
    assert not rule.met({"accuracy": 0.95, "demographic_parity_difference": 0.2})
    assert not rule.met({"accuracy": 0.5, "demographic_parity_difference": 0.0})


@pytest.mark.parametrize(
    "metrics",
    [{}, {"accuracy": 0.95}, {"accuracy": None, "demographic_parity_difference": 0.0}, {"accuracy": "n/a", "x": 1}],
)
def test_a_missing_or_unusable_value_is_not_met_and_never_an_error(metrics: dict[str, object]) -> None:
    assert not stop_rule.parse(RULE).met(metrics)


@pytest.mark.parametrize(
    ("text", "op"),
    [("loss < 0.1", 0.05), ("loss > 0.1", 0.2), ("loss == 0.1", 0.1), ("loss != 0.1", 0.3), ("loss <= 0.1", 0.1)],
)
def test_each_comparison(text: str, op: float) -> None:
    assert stop_rule.parse(text).met({"loss": op})


def test_describe_shows_the_values_read() -> None:
    rule = stop_rule.parse(RULE)
    assert rule.describe({"accuracy": 0.931234567, "demographic_parity_difference": 0}) == (
        "accuracy=0.931235, demographic_parity_difference=0"
    )


@pytest.mark.parametrize(
    "text", ["accuracy >>= 1", "accuracy", "", "accuracy >= 0.9 and", "__import__('os').system('x') == 0", "a.b[0] > 1"]
)
def test_a_bad_rule_is_a_config_error_naming_the_key(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        stop_rule.parse(text)
    assert info.value.key == "hydra.sweeper.stop_when"
    assert str(info.value).startswith("hydra.sweeper.stop_when=")
    assert "\n" not in str(info.value)


def test_the_sweeper_settings_check_parses_stop_when() -> None:
    ExplaunchSweeperConf().check("hydra.sweeper")  # unset: nothing to parse
    ExplaunchSweeperConf(stop_when=RULE).check("hydra.sweeper")
    with pytest.raises(ConfigError) as info:
        ExplaunchSweeperConf(stop_when="accuracy >>= 1").check("hydra.sweeper")
    assert str(info.value).startswith("hydra.sweeper.stop_when=accuracy >>= 1: not an expression")
