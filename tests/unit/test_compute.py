"""Latency summaries: ``percentile`` agrees with numpy's default (linear) method; ``summarize`` names its keys."""

from __future__ import annotations

import random

import numpy as np
import pytest

from explaunch.measure.compute import percentile, summarize

QS = [0.0, 1.0, 5.0, 12.5, 25.0, 33.3, 50.0, 66.7, 75.0, 90.0, 95.0, 99.0, 99.9, 100.0]


@pytest.mark.parametrize("seed", range(8))
def test_percentile_matches_numpy_linear_percentile(seed: int) -> None:
    rng = random.Random(seed)
    size = rng.randint(1, 60)
    values = [rng.uniform(-1000.0, 1000.0) for _ in range(size)]

    for q in QS:
        expected = float(np.percentile(values, q))
        assert percentile(values, q) == pytest.approx(expected, rel=1e-12, abs=1e-9), (size, q)


@pytest.mark.parametrize("seed", range(4))
def test_percentile_matches_numpy_on_integer_values_with_ties(seed: int) -> None:
    rng = random.Random(100 + seed)
    values = [float(rng.randint(0, 5)) for _ in range(rng.randint(2, 30))]

    for q in QS:
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)), abs=1e-12), q


def test_percentile_does_not_need_sorted_input_or_change_it() -> None:
    values = [5.0, 1.0, 4.0, 2.0, 3.0]

    assert percentile(values, 50) == 3.0
    assert percentile(values, 25) == 2.0
    assert values == [5.0, 1.0, 4.0, 2.0, 3.0]


def test_percentile_interpolates_linearly_between_ranks() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == pytest.approx(2.5)
    assert percentile([10.0, 20.0], 25) == pytest.approx(12.5)
    assert percentile([1.0, 2.0, 3.0, 4.0], 95) == pytest.approx(3.85)


@pytest.mark.parametrize("q", [0.0, 37.5, 50.0, 100.0])
def test_percentile_of_a_single_value_is_that_value(q: float) -> None:
    assert percentile([4.25], q) == 4.25


def test_percentile_0_is_the_minimum_and_100_the_maximum() -> None:
    values = [3.5, -2.0, 8.25, 0.0, 7.0]

    assert percentile(values, 0) == -2.0
    assert percentile(values, 100) == 8.25


def test_percentile_of_no_values_raises_value_error() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)


def test_summarize_gives_mean_p50_and_p95_in_seconds() -> None:
    summary = summarize([1.0, 2.0, 3.0, 4.0], "latency_batch")

    assert set(summary) == {"latency_batch_mean_s", "latency_batch_p50_s", "latency_batch_p95_s"}
    assert summary["latency_batch_mean_s"] == pytest.approx(2.5)
    assert summary["latency_batch_p50_s"] == pytest.approx(2.5)
    assert summary["latency_batch_p95_s"] == pytest.approx(3.85)


def test_summarize_agrees_with_numpy_on_random_values() -> None:
    rng = random.Random(42)
    values = [rng.expovariate(10.0) for _ in range(101)]

    summary = summarize(values, "ttft")

    assert summary["ttft_mean_s"] == pytest.approx(float(np.mean(values)), rel=1e-12)
    assert summary["ttft_p50_s"] == pytest.approx(float(np.percentile(values, 50)), rel=1e-12)
    assert summary["ttft_p95_s"] == pytest.approx(float(np.percentile(values, 95)), rel=1e-12)


def test_summarize_of_a_single_value() -> None:
    assert summarize([0.125], "x") == {"x_mean_s": 0.125, "x_p50_s": 0.125, "x_p95_s": 0.125}
