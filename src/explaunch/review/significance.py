"""Two samples compared: Welch's t-test, the Mann-Whitney U test and their effect sizes. The one implementation
behind ``explaunch validate`` (its ``compare:`` rules) and ``explaunch compare`` (two sweeps, group by group).

The p-values are scipy's (imported on first use: the CLI starts without it). Samples are plain lists of floats: a
sweep's seeds, typically 3 to 10 of them, so the effect size for small samples (Hedges' g) is here too. Every
function returns None, not NaN, for what cannot be computed (too few values, no spread on either side), and never
lets scipy's warning about it escape.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

ALTERNATIVES = ("two-sided", "greater", "less")  # "greater": the first sample's mean is the larger


@dataclass(frozen=True)
class TwoSampleTest:
    statistic: float | None  # Welch's t (first minus second), or Mann-Whitney's U of the first sample
    p_value: float | None  # None: no spread on either side, no test possible
    df: float | None = None  # Welch-Satterthwaite degrees of freedom (Welch only)


def variance(values: Sequence[float]) -> float:
    """Sample variance (n - 1)."""
    mean = sum(values) / len(values)
    return sum((x - mean) ** 2 for x in values) / (len(values) - 1)


def welch(a: Sequence[float], b: Sequence[float], alternative: str = "two-sided") -> TwoSampleTest:
    """Welch's t-test (unequal variances) of mean(a) against mean(b): scipy's ``ttest_ind(a, b, equal_var=False)``.
    Needs 2 values a side; with no spread on either side there is no test (everything None), whatever the means."""
    from scipy import stats

    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"Welch's t-test needs at least 2 values a side (got {len(a)} and {len(b)})")
    if variance(a) == 0 and variance(b) == 0:  # t is 0/0 or infinite, df 0/0: scipy says NaN, or p=0 for any gap
        return TwoSampleTest(None, None, None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # constant samples: scipy warns and returns NaN
        result = stats.ttest_ind(a, b, equal_var=False, alternative=alternative)
    statistic, p_value, df = float(result.statistic), float(result.pvalue), float(result.df)
    if math.isnan(p_value):
        return TwoSampleTest(None, None, None)
    return TwoSampleTest(statistic, p_value, None if math.isnan(df) else df)


def mann_whitney(a: Sequence[float], b: Sequence[float], alternative: str = "two-sided") -> TwoSampleTest:
    """The Mann-Whitney U test of a against b (scipy's ``mannwhitneyu``); U is a's."""
    from scipy import stats

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.mannwhitneyu(a, b, alternative=alternative)
    statistic, p_value = float(result.statistic), float(result.pvalue)
    return TwoSampleTest(statistic, None if math.isnan(p_value) else p_value)


def rank_biserial(u_statistic: float, n_a: int, n_b: int) -> float:
    """Effect size of a Mann-Whitney U: 2U/(n_a n_b) - 1, from -1 (every b above every a) to 1."""
    return 2.0 * u_statistic / (n_a * n_b) - 1.0


def cohens_d(a: Sequence[float], b: Sequence[float]) -> float | None:
    """(mean a - mean b) / pooled sample standard deviation; None when neither side varies."""
    na, nb = len(a), len(b)
    pooled = math.sqrt(((na - 1) * variance(a) + (nb - 1) * variance(b)) / (na + nb - 2))
    return (sum(a) / na - sum(b) / nb) / pooled if pooled > 0 else None


def hedges_g(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Cohen's d with the small-sample correction J = 1 - 3 / (4 (n_a + n_b) - 9) (Hedges and Olkin's
    approximation): d overstates the effect by about 1/J, 25 % with 3 values a side."""
    d = cohens_d(a, b)
    return None if d is None else d * (1.0 - 3.0 / (4.0 * (len(a) + len(b)) - 9.0))
