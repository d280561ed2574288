"""Checks of a sweep's results against a rules file: ``explaunch validate SWEEP_DIR --rules rules.yaml``.

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

Expressions are parsed, never run as code: numbers, strings, names (a metric, a swept parameter such as ``lam`` or
``experiment_type.n_low``, ``status``, ``duration_s``), arithmetic (``+ - * / // % **``), comparisons (also chained,
and ``in (...)``), ``and``/``or``/``not``, and ``abs``/``min``/``max``. Anything else is refused when the file is read.

Each per-job check (a required metric, a range, a rule) passes or fails for each job; a comparison passes or fails for
the sweep. The quality score of a job is the fraction of its checks that passed; the sweep's, the fraction of all
checks (every job's and the comparisons).
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from explaunch.errors import ConfigError
from explaunch.review import rows as review
from explaunch.review import significance

SECTIONS = ("where", "required", "ranges", "rules", "compare")
RANGE_KEYS = ("min", "max")
COMPARE_KEYS = ("metric", "a", "b", "test", "alpha", "expect")
TESTS = ("welch", "mannwhitney")
EXPECTS = ("a_greater", "b_greater", "different")
ALTERNATIVE = {"a_greater": "greater", "b_greater": "less", "different": "two-sided"}
JOB_NAMES = ("status", "duration_s", "job_num")  # names an expression may use besides metrics and parameters


# ---- expressions ----------------------------------------------------------------------------------------------
class MissingName(Exception):
    """The job has no value for a name the expression uses (a failed job has no metrics)."""


BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: lambda a, b: math.pow(a, b),  # floats: an overflow raises instead of building a huge integer
}
COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}
FUNCTIONS: dict[str, Callable[..., Any]] = {"abs": abs, "min": min, "max": max}
ALLOWED_TEXT = "numbers, strings, metric and parameter names, + - * / // % **, comparisons, and/or/not, abs/min/max"


class Expression:
    """A rule's expression, checked against a whitelist of syntax when made, evaluated over one job's values."""

    def __init__(self, source: str, key: str) -> None:
        self.source = source
        self.key = key
        try:
            tree = ast.parse(source.strip(), mode="eval")
        except SyntaxError as ex:
            raise ConfigError(key, source, f"not an expression ({ex.msg}); allowed: {ALLOWED_TEXT}") from None
        self.body = tree.body
        self.names: list[str] = []
        self._check(self.body)
        if not self._is_condition(self.body):
            raise ConfigError(key, source, "must be a condition: a comparison, or and/or/not of comparisons")

    def _refuse(self, what: str) -> ConfigError:
        return ConfigError(self.key, self.source, f"{what} is not allowed; allowed: {ALLOWED_TEXT}")

    def _is_condition(self, node: ast.expr) -> bool:
        if isinstance(node, ast.Compare):
            return True
        if isinstance(node, ast.BoolOp):
            return all(self._is_condition(v) for v in node.values)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return True
        return isinstance(node, ast.Constant) and isinstance(node.value, bool)

    def _check(self, node: ast.expr) -> None:
        if isinstance(node, ast.Constant):
            if not isinstance(node.value, int | float | str | bool) and node.value is not None:
                raise self._refuse(f"the constant {node.value!r}")
        elif isinstance(node, ast.Name | ast.Attribute):
            self.names.append(self._dotted(node))
        elif isinstance(node, ast.BoolOp):
            for value in node.values:
                self._check(value)
        elif isinstance(node, ast.UnaryOp):
            if not isinstance(node.op, ast.Not | ast.USub | ast.UAdd):
                raise self._refuse(type(node.op).__name__)
            self._check(node.operand)
        elif isinstance(node, ast.BinOp):
            if type(node.op) not in BINARY:
                raise self._refuse(f"the operator {type(node.op).__name__}")
            self._check(node.left)
            self._check(node.right)
        elif isinstance(node, ast.Compare):
            if any(type(op) not in COMPARE for op in node.ops):
                raise self._refuse("this comparison")
            for part in [node.left, *node.comparators]:
                self._check(part)
        elif isinstance(node, ast.Tuple | ast.List):
            for item in node.elts:
                self._check(item)
        elif isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS or node.keywords:
                raise self._refuse(f"the call {ast.unparse(node.func)}(...)")
            for arg in node.args:
                self._check(arg)
        else:
            raise self._refuse(f"{type(node).__name__} ({ast.unparse(node)})")

    def _dotted(self, node: ast.expr) -> str:
        """``experiment_type.n_low`` (an Attribute chain) as the one name it is in the job's overrides."""
        if isinstance(node, ast.Name):
            return node.id
        if isinstance(node, ast.Attribute):
            return f"{self._dotted(node.value)}.{node.attr}"
        raise self._refuse(f"{type(node).__name__} ({ast.unparse(node)})")

    def evaluate(self, values: Mapping[str, Any]) -> Any:
        return self._eval(self.body, values)

    def _eval(self, node: ast.expr, values: Mapping[str, Any]) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name | ast.Attribute):
            name = self._dotted(node)
            if name not in values or values[name] is None:
                raise MissingName(name)
            return values[name]
        if isinstance(node, ast.BoolOp):
            if isinstance(node.op, ast.And):
                return all(bool(self._eval(v, values)) for v in node.values)
            return any(bool(self._eval(v, values)) for v in node.values)
        if isinstance(node, ast.UnaryOp):
            operand = self._eval(node.operand, values)
            if isinstance(node.op, ast.Not):
                return not operand
            return -operand if isinstance(node.op, ast.USub) else +operand
        if isinstance(node, ast.BinOp):
            left, right = self._eval(node.left, values), self._eval(node.right, values)
            for operand in (left, right):  # numbers only: "x" * 10**9 or "%999999999d" % 1 would eat memory
                if not isinstance(operand, int | float):
                    raise TypeError(f"arithmetic on {operand!r}, which is not a number")
            return BINARY[type(node.op)](left, right)
        if isinstance(node, ast.Compare):
            left = self._eval(node.left, values)
            for op, right_node in zip(node.ops, node.comparators, strict=True):
                right = self._eval(right_node, values)
                if not COMPARE[type(op)](left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.Tuple | ast.List):
            return tuple(self._eval(item, values) for item in node.elts)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            return FUNCTIONS[node.func.id](*(self._eval(arg, values) for arg in node.args))
        raise TypeError(type(node).__name__)  # refused in _check; kept for the type checker


# ---- the rules file -------------------------------------------------------------------------------------------
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
    params = review.param_names(rows)
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


# ---- checking -------------------------------------------------------------------------------------------------
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
