"""Checks of a sweep's results against a rules file (:mod:`explaunch.review.rules`): ``explaunch validate``.

Each per-job check (a required metric, a range, a rule) passes or fails for each job; a comparison passes or fails for
the sweep. The quality score of a job is the fraction of its checks that passed; the sweep's, the fraction of all
checks (every job's and the comparisons).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from explaunch.review import rows as review
from explaunch.review import significance
from explaunch.review.rule_expressions import MissingName
from explaunch.review.rules import Comparison, RuleSet, check_names

ALTERNATIVE = {"a_greater": "greater", "b_greater": "less", "different": "two-sided"}  # by the rules' expect


@dataclass(frozen=True)
class Check:
    """One per-job check's outcome."""

    check: str  # required.accuracy, ranges.accuracy, rules.<name>
    job: str
    passed: bool
    value: Any = None
    message: str = ""


@dataclass(frozen=True)
class ComparisonResult:
    check: str  # compare.<name>
    metric: str
    test: str
    expect: str
    alpha: float
    a: dict[str, str]
    b: dict[str, str]
    values_a: list[float]
    values_b: list[float]
    mean_a: float | None
    mean_b: float | None
    statistic: float | None
    p_value: float | None
    effect_size: float | None
    effect_name: str  # cohens_d | rank_biserial
    passed: bool
    message: str


@dataclass(frozen=True)
class Validation:
    sweep_dir: str
    checks: list[Check]
    comparisons: list[ComparisonResult]
    jobs: list[dict[str, Any]]  # job, status, the swept parameters, quality, passed, total, failed (check names)

    @property
    def total(self) -> int:
        return len(self.checks) + len(self.comparisons)

    @property
    def passed_count(self) -> int:
        return sum(c.passed for c in self.checks) + sum(c.passed for c in self.comparisons)

    @property
    def quality(self) -> float | None:
        return self.passed_count / self.total if self.total else None

    @property
    def passed(self) -> bool:
        return self.passed_count == self.total

    def to_dict(self) -> dict[str, Any]:
        return {
            "sweep_dir": self.sweep_dir,
            "passed": self.passed,
            "quality": self.quality,
            "checks_passed": self.passed_count,
            "checks_total": self.total,
            "jobs": self.jobs,
            "checks": [asdict(c) for c in self.checks],
            "comparisons": [asdict(c) for c in self.comparisons],
        }


def job_values(row: Mapping[str, Any], params: Sequence[str]) -> dict[str, Any]:
    """What an expression sees for one job: its metrics, its parameters as numbers/booleans where they are."""
    values = dict(row)
    for param in params:
        if param in values:
            values[param] = typed(values[param])
    return values


def typed(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    if text in ("true", "false"):
        return text == "true"
    if text == "null":
        return None
    number = review.as_number(text)
    if number is not None:
        return int(number) if number.is_integer() and "." not in text and "e" not in text.lower() else number
    return text


def check_job(rules: RuleSet, row: Mapping[str, Any], params: Sequence[str]) -> list[Check]:
    job = str(row["job"])
    out = []
    for metric in rules.required:
        present = review.as_number(row.get(metric)) is not None
        out.append(Check(f"required.{metric}", job, present, row.get(metric), "" if present else "missing"))
    for bound in rules.ranges:
        value = review.as_number(row.get(bound.metric))
        key = f"ranges.{bound.metric}"
        if value is None:
            out.append(Check(key, job, False, None, "missing"))
            continue
        low_ok = bound.min is None or value >= bound.min
        high_ok = bound.max is None or value <= bound.max
        message = "" if low_ok and high_ok else f"{value:.6g} outside {bound.text}"
        out.append(Check(key, job, low_ok and high_ok, value, message))
    values = job_values(row, params)
    for name, expression in rules.rules.items():
        key = f"rules.{name}"
        try:
            result = bool(expression.evaluate(values))
        except MissingName as ex:
            out.append(Check(key, job, False, None, f"no value for {ex.args[0]}"))
            continue
        except (TypeError, ValueError, ArithmeticError) as ex:
            out.append(Check(key, job, False, None, f"cannot evaluate: {ex}"))
            continue
        used = {n: values.get(n) for n in dict.fromkeys(expression.names)}
        shown = ", ".join(f"{n}={v:.6g}" if isinstance(v, float) else f"{n}={v}" for n, v in used.items())
        out.append(Check(key, job, result, used, "" if result else f"false for {shown}"))
    return out


def compare(comparison: Comparison, rows: Sequence[dict[str, Any]]) -> ComparisonResult:
    """Welch's t-test (effect: Cohen's d, pooled sample std) or Mann-Whitney U (effect: rank-biserial correlation,
    2U/(n_a n_b) - 1) of the metric between the jobs of setting a and those of setting b
    (explaunch.review.significance)."""

    def side(chosen: dict[str, str]) -> list[float]:
        picked = review.filter_rows(rows, list(chosen.items()))
        return [v for v in (review.as_number(r.get(comparison.metric)) for r in picked) if v is not None]

    values_a, values_b = side(comparison.a), side(comparison.b)
    mean_a = sum(values_a) / len(values_a) if values_a else None
    mean_b = sum(values_b) / len(values_b) if values_b else None
    effect_name = "cohens_d" if comparison.test == "welch" else "rank_biserial"

    def outcome(
        statistic: float | None, p_value: float | None, effect: float | None, passed: bool, message: str
    ) -> ComparisonResult:
        return ComparisonResult(
            check=f"compare.{comparison.name}",
            metric=comparison.metric,
            test=comparison.test,
            expect=comparison.expect,
            alpha=comparison.alpha,
            a=comparison.a,
            b=comparison.b,
            values_a=values_a,
            values_b=values_b,
            mean_a=mean_a,
            mean_b=mean_b,
            statistic=statistic,
            p_value=p_value,
            effect_size=effect,
            effect_name=effect_name,
            passed=passed,
            message=message,
        )

    if len(values_a) < 2 or len(values_b) < 2:
        message = (
            f"needs at least 2 jobs with {comparison.metric} on each side (a: {len(values_a)}, b: {len(values_b)})"
        )
        return outcome(None, None, None, False, message)
    alternative = ALTERNATIVE[comparison.expect]
    if comparison.test == "welch":
        result = significance.welch(values_a, values_b, alternative)
        effect = significance.cohens_d(values_a, values_b)
    else:
        result = significance.mann_whitney(values_a, values_b, alternative)
        effect = significance.rank_biserial(result.statistic or 0.0, len(values_a), len(values_b))
    if result.p_value is None:
        message = "no p-value: both sides have no spread"
        return outcome(None, None, effect, False, message)
    passed = result.p_value < comparison.alpha
    verdict = "significant" if passed else "not significant"
    message = (
        f"p={result.p_value:.3g} {'<' if passed else '>='} alpha={comparison.alpha:g}: {verdict} ({comparison.expect})"
    )
    return outcome(result.statistic, result.p_value, effect, passed, message)


def validate(rules: RuleSet, rows: Sequence[dict[str, Any]], sweep_dir: str = "") -> Validation:
    """Every check of ``rules`` on the jobs in ``rows`` (see the module docstring). Raises ``ConfigError`` for names
    the sweep does not have."""
    check_names(rules, rows)
    params = review.param_names(rows)
    shown_params = review.varying_params(rows) or params
    checked = review.filter_rows(rows, rules.where) if rules.where else list(rows)
    checks: list[Check] = []
    jobs = []
    for row in checked:
        job_checks = check_job(rules, row, params)
        checks += job_checks
        passed = sum(c.passed for c in job_checks)
        jobs.append(
            {
                "job": row["job"],
                "status": row["status"],
                **{p: row.get(p) for p in shown_params},
                "quality": passed / len(job_checks) if job_checks else None,
                "passed": passed,
                "total": len(job_checks),
                "failed": [c.check for c in job_checks if not c.passed],
            }
        )
    comparisons = [compare(c, checked) for c in rules.compare]
    return Validation(sweep_dir, checks, comparisons, jobs)
