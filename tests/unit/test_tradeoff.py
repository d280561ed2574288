"""explaunch.review.tradeoff: the Pareto front, which direction is better, and the points of a sweep, by hand."""

from __future__ import annotations

from typing import Any

import pytest

from explaunch.errors import ConfigError
from explaunch.review import tradeoff

POINTS = [(1.0, 5.0), (2.0, 4.0), (3.0, 1.0), (1.0, 1.0), (2.0, 4.0), (0.0, 0.0)]


@pytest.mark.parametrize(
    ("better_x", "better_y", "front"),
    [
        ("max", "max", [0, 1, 2, 4]),  # (1,1) and (0,0) are beaten by (2,4); the two (2,4) tie, both on it
        ("max", "min", [2, 5]),  # (3,1) has the most x for y <= 1; (0,0) the least y
        ("min", "min", [5]),  # (0,0) beats every other
        ("min", "max", [0, 5]),  # (1,5): most y; (0,0): least x
    ],
)
def test_pareto_front_keeps_the_points_no_other_beats(better_x: str, better_y: str, front: list[int]) -> None:
    assert tradeoff.pareto_front(POINTS, better_x, better_y) == front


def test_one_point_is_its_own_front() -> None:
    assert tradeoff.pareto_front([(1.0, 1.0)], "max", "min") == [0]


@pytest.mark.parametrize(
    ("metric", "better"),
    [
        ("throughput_e2e_tokens_per_s", "max"),
        ("throughput_decode_tokens_per_s", "max"),
        ("tokens_per_joule", "max"),
        ("accuracy", "max"),
        ("balanced_accuracy", "max"),
        ("metrics/mAP50-95(B)", "max"),
        ("energy_per_output_token_j", "min"),
        ("latency_batch_p50_s", "min"),
        ("ttft_p95_s", "min"),
        ("job_energy_joules", "min"),
        ("demographic_parity_difference", "min"),
        ("equalized_odds_difference", "min"),
        ("accuracy_gap", "min"),
        ("memory_peak_rss_mib", "min"),
        ("duration_s", "min"),
        ("slept_s", None),
        ("flops_total", None),
    ],
)
def test_known_directions(metric: str, better: str | None) -> None:
    assert tradeoff.known_direction(metric) == better


def test_better_is_parsed_by_axis_or_by_metric_name() -> None:
    assert tradeoff.parse_better("x=max,y=min", "a", "b") == {"x": "max", "y": "min"}
    assert tradeoff.parse_better("b=max", "a", "b") == {"y": "max"}
    assert tradeoff.parse_better(None, "a", "b") == {}
    for bad in ("x=up", "z=max", "x"):
        with pytest.raises(ConfigError, match=r"^--better=.*expected x=max\|min,y=max\|min"):
            tradeoff.parse_better(bad, "a", "b")


def test_an_unknown_direction_is_an_error_naming_the_option() -> None:
    with pytest.raises(ConfigError) as caught:
        tradeoff.directions("accuracy", "slept_s", {})
    assert str(caught.value) == (
        "--tradeoff=slept_s: no known direction for this metric; say which is better with --better y=max or y=min"
    )
    assert tradeoff.directions("accuracy", "slept_s", {"y": "min"}) == {"x": "max", "y": "min"}
    assert tradeoff.directions("accuracy", "duration_s", {"x": "min"}) == {"x": "min", "y": "min"}  # given wins


def row(lam: str, seed: int, accuracy: float | None, gap: float | None, status: str = "completed") -> dict[str, Any]:
    out: dict[str, Any] = {"job": f"{lam}-{seed}", "status": status, "overrides": f"lam={lam} seed={seed}"}
    out |= {"lam": lam, "seed": str(seed)}
    if accuracy is not None:
        out["accuracy"] = accuracy
    if gap is not None:
        out["dp_gap"] = gap
    return out


def test_points_are_means_and_stds_over_seeds_and_the_front_is_marked() -> None:
    rows = [
        row("0.0", 0, 0.80, 0.30),
        row("0.0", 1, 0.84, 0.34),
        row("0.5", 0, 0.78, 0.10),
        row("0.5", 1, 0.80, 0.12),
        row("1.0", 0, 0.70, 0.20),  # lower accuracy and a larger gap than lam=0.5: dominated
        row("1.0", 1, 0.72, 0.20),
        row("1.0", 2, None, None, status="failed"),  # not counted
    ]

    result = tradeoff.tradeoff(rows, "accuracy", "dp_gap")

    assert result["better"] == {"x": "max", "y": "min"}
    assert result["params"] == ["lam"]  # seed is a repeat, not a configuration
    by_label = {p["label"]: p for p in result["points"]}
    assert list(by_label) == ["lam=0.0", "lam=0.5", "lam=1.0"]
    low = by_label["lam=0.0"]
    assert (low["n"], low["x_mean"], low["y_mean"]) == (2, pytest.approx(0.82), pytest.approx(0.32))
    assert low["x_std"] == pytest.approx((2 * 0.02**2) ** 0.5)  # sample std of 0.80, 0.84
    assert [p["on_front"] for p in result["points"]] == [True, True, False]
    assert result["front"] == ["lam=0.5", "lam=0.0"]  # along x
    assert (result["jobs"], result["left_out"]) == (6, 1)


def test_a_metric_no_completed_job_has_is_an_error() -> None:
    rows = [row("0.0", 0, 0.8, 0.3)]
    with pytest.raises(ConfigError, match=r"^--tradeoff=nosuch: no such metric in this sweep; available: accuracy"):
        tradeoff.tradeoff(rows, "accuracy", "nosuch")
    with pytest.raises(ConfigError, match="no completed job"):
        tradeoff.tradeoff([row("0.0", 0, None, None, status="failed")], "accuracy", "dp_gap")
    with pytest.raises(ConfigError, match="two different metrics"):
        tradeoff.tradeoff(rows, "accuracy", "accuracy")


def test_the_dashboards_first_pair() -> None:
    assert tradeoff.default_pair(["slept_s", "accuracy", "demographic_parity_difference"]) == (
        "accuracy",
        "demographic_parity_difference",
    )
    assert tradeoff.default_pair(["slept_s", "duration_s", "accuracy"]) == ("duration_s", "accuracy")
    assert tradeoff.default_pair(["slept_s", "attempt"]) == ("slept_s", "attempt")
    assert tradeoff.default_pair(["slept_s"]) is None
