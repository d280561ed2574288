"""The fairness trade-off's measured window: its training repeats until the energy window means something."""

from __future__ import annotations

from pathlib import Path

import pytest

from explaunch.config import validate
from explaunch.experiments.base import ExperimentResult
from tests.conftest import compose_config

pytestmark = pytest.mark.extras  # fairness_tradeoff needs torch


def run_job(tmp_path: Path, *overrides: str) -> ExperimentResult:
    from explaunch.experiments import fairness_tradeoff  # here: a core install (no torch) still collects this file

    config = validate(compose_config("experiment_type=fairness_tradeoff", "experiment_type.epochs=20", *overrides))
    return fairness_tradeoff.run(config, tmp_path)


@pytest.mark.parametrize(
    ("min_window_s", "min_iterations"),
    [(1.0, 1), (0.01, 4)],
    ids=["time-bound", "count-bound"],
)
def test_the_training_window_lasts_min_window_s_and_runs_min_iterations(
    tmp_path: Path, min_window_s: float, min_iterations: int
) -> None:
    result = run_job(
        tmp_path,
        "energy.enabled=true",
        f"energy.min_window_s={min_window_s}",
        f"energy.min_iterations={min_iterations}",
    )
    m, energy = result.metrics, result.info["energy"]
    assert isinstance(energy, dict) and "error" not in energy, energy
    runs = m["window_training_runs"]
    assert runs >= min_iterations and energy["iterations"] == runs
    assert m["energy_window_s"] == energy["window_s"] >= min_window_s
    if min_window_s >= 1.0:  # a 20-epoch run takes milliseconds: the clock, not the count, ended this window
        assert runs > min_iterations
    else:  # the count ended it, at exactly min_iterations
        assert runs == min_iterations
    assert m["energy_per_training_run_joules"] == pytest.approx(m["energy_joules"] / runs)


def test_without_energy_the_training_runs_once(tmp_path: Path) -> None:
    m = run_job(tmp_path, "energy.enabled=false", "energy.min_window_s=1.0", "energy.min_iterations=5").metrics
    assert m["window_training_runs"] == 1 and "energy_joules" not in m
