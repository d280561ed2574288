"""explaunch.review.significance (Welch, Mann-Whitney, effect sizes) and explaunch.review.comparison's group numbers,
on samples small enough to check by hand."""

from __future__ import annotations

import math
import warnings

import pytest
from scipy import stats

from explaunch.review import comparison, significance

A = [1.0, 2.0, 3.0]  # mean 2, sample std 1
B = [4.0, 5.0, 6.0]  # mean 5, sample std 1


def test_welch_t_df_and_p_match_a_hand_computation_and_scipy() -> None:
    result = significance.welch(B, A)

    # t = (5 - 2) / sqrt(1/3 + 1/3) = 3 / sqrt(2/3); df = (2/3)^2 / (2 * (1/3)^2 / 2) = 4
    assert result.statistic == pytest.approx(3 / math.sqrt(2 / 3))
    assert result.df == pytest.approx(4.0)
    assert result.p_value == pytest.approx(2 * stats.t.sf(3 / math.sqrt(2 / 3), 4))
    assert result.p_value == pytest.approx(0.0213116, abs=1e-6)
    expected = stats.ttest_ind(B, A, equal_var=False)
    assert (result.statistic, result.p_value) == pytest.approx((expected.statistic, expected.pvalue))


def test_welch_one_sided_halves_the_p_value_in_the_expected_direction() -> None:
    two_sided = significance.welch(B, A).p_value
    assert two_sided is not None
    assert significance.welch(B, A, "greater").p_value == pytest.approx(two_sided / 2)
    assert significance.welch(A, B, "less").p_value == pytest.approx(two_sided / 2)


def test_welch_of_two_constant_samples_has_no_p_value_and_no_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = significance.welch([1.0, 1.0, 1.0], [2.0, 2.0])
    assert result.p_value is None and result.statistic is None


def test_welch_needs_two_values_a_side() -> None:
    with pytest.raises(ValueError, match="at least 2 values a side"):
        significance.welch([1.0], B)


def test_cohens_d_and_hedges_g_by_hand() -> None:
    # d = (5 - 2) / pooled std 1 = 3; J = 1 - 3 / (4 * 6 - 9) = 0.8
    assert significance.cohens_d(B, A) == pytest.approx(3.0)
    assert significance.cohens_d(A, B) == pytest.approx(-3.0)
    assert significance.hedges_g(B, A) == pytest.approx(2.4)
    assert significance.cohens_d([1.0, 1.0], [2.0, 2.0]) is None
    assert significance.hedges_g([1.0, 1.0], [2.0, 2.0]) is None


def test_mann_whitney_and_rank_biserial() -> None:
    result = significance.mann_whitney(A, B)
    expected = stats.mannwhitneyu(A, B)
    assert (result.statistic, result.p_value) == pytest.approx((expected.statistic, expected.pvalue))
    assert result.statistic == 0.0  # no a above any b
    assert significance.rank_biserial(result.statistic or 0.0, 3, 3) == -1.0


def test_compare_values_gives_b_minus_a_in_units_and_percent_with_welch_and_hedges_g() -> None:
    a, b = [0.85, 0.86, 0.84], [0.87, 0.88, 0.86]

    row = comparison.compare_values(a, b)

    assert (row["n_a"], row["n_b"]) == (3, 3)
    assert row["mean_a"] == pytest.approx(0.85) and row["mean_b"] == pytest.approx(0.87)
    assert row["std_a"] == pytest.approx(0.01) and row["std_b"] == pytest.approx(0.01)
    assert row["diff"] == pytest.approx(0.02)
    assert row["diff_pct"] == pytest.approx(100 * 0.02 / 0.85)
    # t = 0.02 / sqrt(0.01^2/3 * 2) = sqrt(6) = 2.449; df = 4; g = (0.02 / 0.01) * 0.8 = 1.6
    assert row["t"] == pytest.approx(math.sqrt(6))
    assert row["df"] == pytest.approx(4.0)
    assert row["p_value"] == pytest.approx(stats.ttest_ind(b, a, equal_var=False).pvalue)
    assert row["hedges_g"] == pytest.approx(1.6)
    assert row["note"] == ""


@pytest.mark.parametrize(
    ("a", "b", "note"),
    [
        ([1.0], [2.0, 3.0], "no test: n=1 in A (needs 2 a side)"),
        ([1.0, 2.0], [], "no test: n=0 in B (needs 2 a side)"),
        ([1.0], [2.0], "no test: n=1 in A and n=1 in B (needs 2 a side)"),
        ([1.0, 1.0], [2.0, 2.0], "no test: no spread on either side"),
    ],
)
def test_a_group_too_small_or_without_spread_gets_no_test_and_says_why(
    a: list[float], b: list[float], note: str
) -> None:
    row = comparison.compare_values(a, b)

    assert row["note"] == note
    assert row["p_value"] is None and row["t"] is None
    assert row["mean_a"] == (sum(a) / len(a) if a else None)  # the means are there all the same


def test_the_relative_difference_is_none_when_a_is_zero() -> None:
    row = comparison.compare_values([0.0, 0.0], [1.0, 2.0])
    assert row["diff"] == pytest.approx(1.5)
    assert row["diff_pct"] is None
