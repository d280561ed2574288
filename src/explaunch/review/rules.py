"""The rules file of ``explaunch validate SWEEP_DIR --rules rules.yaml``: read, checked, and its names checked
against the sweep. The checking itself: :mod:`explaunch.review.validation`.

The rules file (YAML; every section optional, an example in ``examples/rules.yaml``)::

    where: {status: completed}       # which jobs the checks apply to (as report --where); default: all
    required: [accuracy, dp_gap]     # metrics every job must have
    ranges:                          # expected range per metric, bounds included; a job without it fails
      accuracy: {min: 0.5, max: 1.0}
    rules:                           # name: an expression over one job's metrics and swept parameters
      gap_small_when_penalised: "lam < 0.5 or dp_gap < 0.1"
    compare:                         # two settings compared over seeds
      penalty_lowers_gap:
        metric: dp_gap
        a: {lam: 0.0}                # the jobs of each side, chosen by swept parameters
        b: {lam: 1.0}
        test: welch                  # welch (Welch's t-test) | mannwhitney (Mann-Whitney U)
        alpha: 0.05                  # passes when p < alpha
        expect: a_greater            # a_greater | b_greater | different

The expressions of ``rules:``: :mod:`explaunch.review.rule_expressions`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from explaunch.errors import ConfigError
from explaunch.review import rows as review
from explaunch.review.rule_expressions import Expression
from explaunch.review.rule_expressions import MissingName as MissingName  # explaunch.launch.stop_rule's import

SECTIONS = ("where", "required", "ranges", "rules", "compare")
RANGE_KEYS = ("min", "max")
COMPARE_KEYS = ("metric", "a", "b", "test", "alpha", "expect")
TESTS = ("welch", "mannwhitney")
EXPECTS = ("a_greater", "b_greater", "different")
JOB_NAMES = ("status", "duration_s", "job_num")  # names an expression may use besides metrics and parameters


@dataclass(frozen=True)
class Range:
    metric: str
    min: float | None
    max: float | None

    @property
    def text(self) -> str:
        low = "-inf" if self.min is None else f"{self.min:g}"
        high = "inf" if self.max is None else f"{self.max:g}"
        return f"[{low}, {high}]"


@dataclass(frozen=True)
class Comparison:
    name: str
    metric: str
    a: dict[str, str]
    b: dict[str, str]
    test: str = "welch"
    alpha: float = 0.05
    expect: str = "different"


@dataclass(frozen=True)
class RuleSet:
    where: list[tuple[str, str]] = field(default_factory=list)
    required: list[str] = field(default_factory=list)
    ranges: list[Range] = field(default_factory=list)
    rules: dict[str, Expression] = field(default_factory=dict)
    compare: list[Comparison] = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        return not (self.required or self.ranges or self.rules or self.compare)


def load_rules(path: Path) -> RuleSet:
    """Read and check a rules file; every mistake is a ``ConfigError`` naming the key and what is allowed."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as ex:
        raise ConfigError("--rules", path, f"cannot read the rules file ({ex.strerror or ex})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as ex:
        mark = getattr(ex, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError("--rules", path, f"not valid YAML{where}: {getattr(ex, 'problem', ex)}") from None
    return parse_rules(data)


def parse_rules(data: Any) -> RuleSet:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError("rules file", type(data).__name__, f"must be a mapping with the keys {', '.join(SECTIONS)}")
    for key in data:
        if key not in SECTIONS:
            raise ConfigError(str(key), short(data[key]), f"unknown section; allowed: {', '.join(SECTIONS)}")
    rules = RuleSet(
        where=parse_where(data.get("where")),
        required=parse_required(data.get("required")),
        ranges=parse_ranges(data.get("ranges")),
        rules=parse_expressions(data.get("rules")),
        compare=parse_comparisons(data.get("compare")),
    )
    if rules.is_empty:
        raise ConfigError("rules file", "{}", "has no checks; give at least one of required, ranges, rules, compare")
    return rules


def short(value: Any, limit: int = 60) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def scalar_text(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float | str) or value is None:
        return "null" if value is None else str(value)
    raise ConfigError(key, short(value), "must be a single value (a number or a string)")


def selection(key: str, value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping) or not value:
        raise ConfigError(key, short(value), "must be a mapping of swept parameters to values, e.g. {lam: 0.5}")
    return {str(k): scalar_text(f"{key}.{k}", v) for k, v in value.items()}


def parse_where(value: Any) -> list[tuple[str, str]]:
    return [] if value is None else list(selection("where", value).items())


def parse_required(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError("required", short(value), "must be a list of metric names, e.g. [accuracy, dp_gap]")
    return list(value)


def number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(key, short(value), "must be a finite number")
    return float(value)


def parse_ranges(value: Any) -> list[Range]:
    if value is None:
        return []
    if not isinstance(value, Mapping):
        raise ConfigError("ranges", short(value), "must map metric names to {min: ..., max: ...}")
    out = []
    for metric, bounds in value.items():
        key = f"ranges.{metric}"
        if not isinstance(bounds, Mapping) or not bounds:
            raise ConfigError(key, short(bounds), "must be a mapping with min and/or max, e.g. {min: 0.5, max: 1}")
        for bound in bounds:
            if bound not in RANGE_KEYS:
                raise ConfigError(f"{key}.{bound}", short(bounds[bound]), "unknown key; allowed: min, max")
        low = number(f"{key}.min", bounds["min"]) if bounds.get("min") is not None else None
        high = number(f"{key}.max", bounds["max"]) if bounds.get("max") is not None else None
        if low is not None and high is not None and low > high:
            raise ConfigError(f"{key}.min", low, f"is above max ({high:g}); min must be <= max")
        out.append(Range(str(metric), low, high))
    return out


def parse_expressions(value: Any) -> dict[str, Expression]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError("rules", short(value), 'must map rule names to expressions, e.g. {fast: "duration_s < 60"}')
    out = {}
    for name, source in value.items():
        if not isinstance(source, str):
            raise ConfigError(f"rules.{name}", short(source), "must be an expression in quotes, e.g. accuracy > 0.8")
        out[str(name)] = Expression(source, f"rules.{name}")
    return out


def parse_comparisons(value: Any) -> list[Comparison]:
    if value is None:
        return []
    if not isinstance(value, Mapping):
        raise ConfigError("compare", short(value), "must map comparison names to {metric, a, b, test, alpha, expect}")
    out = []
    for name, spec in value.items():
        key = f"compare.{name}"
        if not isinstance(spec, Mapping):
            raise ConfigError(key, short(spec), "must be a mapping with metric, a, b (and test, alpha, expect)")
        for item in spec:
            if item not in COMPARE_KEYS:
                raise ConfigError(
                    f"{key}.{item}", short(spec[item]), f"unknown key; allowed: {', '.join(COMPARE_KEYS)}"
                )
        for needed in ("metric", "a", "b"):
            if needed not in spec:
                raise ConfigError(f"{key}.{needed}", "null", "is required (metric: NAME, a: {param: value}, b: ...)")
        metric = spec["metric"]
        if not isinstance(metric, str) or not metric:
            raise ConfigError(f"{key}.metric", short(metric), "must be a metric name")
        test = spec.get("test", "welch")
        if test not in TESTS:
            raise ConfigError(f"{key}.test", short(test), f"allowed: {', '.join(TESTS)}")
        expect = spec.get("expect", "different")
        if expect not in EXPECTS:
            raise ConfigError(f"{key}.expect", short(expect), f"allowed: {', '.join(EXPECTS)}")
        alpha = number(f"{key}.alpha", spec.get("alpha", 0.05))
        if not 0.0 < alpha < 1.0:
            raise ConfigError(f"{key}.alpha", alpha, "must be between 0 and 1 (e.g. 0.05)")
        a, b = selection(f"{key}.a", spec["a"]), selection(f"{key}.b", spec["b"])
        out.append(Comparison(str(name), metric, a, b, str(test), alpha, str(expect)))
    return out


def check_names(rules: RuleSet, rows: Sequence[dict[str, Any]]) -> None:
    """Names the rules use that no job of the sweep has (a typo, most likely) are refused, listing those it has.
    Required metrics and ranges are not: a metric no job recorded is what those checks are there to catch."""
    params = [*review.param_names(rows), *review.tag_names(rows)]
    metrics = review.metric_names(rows)
    for key, _value in rules.where:
        if key not in params and key not in ("status", "job"):
            raise ConfigError(f"where.{key}", _value, f"no such swept parameter; available: {', '.join(params)}")
    known = {*params, *metrics, *JOB_NAMES}
    for name, expression in rules.rules.items():
        for used in expression.names:
            if used not in known:
                raise ConfigError(
                    f"rules.{name}",
                    expression.source,
                    f"'{used}' is no metric or parameter of this sweep; available: {', '.join([*params, *metrics])}",
                )
    for comparison in rules.compare:
        key = f"compare.{comparison.name}"
        if comparison.metric not in metrics:
            raise ConfigError(
                f"{key}.metric", comparison.metric, f"no such metric in this sweep; available: {', '.join(metrics)}"
            )
        for side, chosen in (("a", comparison.a), ("b", comparison.b)):
            for param in chosen:
                if param not in params:
                    raise ConfigError(
                        f"{key}.{side}.{param}",
                        chosen[param],
                        f"no such swept parameter; available: {', '.join(params)}",
                    )
