"""``explaunch validate``: the rules file, the expression evaluator, the checks and the comparisons over seeds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from scipy import stats

from explaunch.cli import main
from explaunch.errors import ConfigError
from explaunch.review.rule_expressions import Expression, MissingName
from explaunch.review.rules import load_rules
from explaunch.sweepdir import records
from explaunch.sweepdir.records import JobError, JobRecord

ROOT = Path(__file__).resolve().parents[2]
# lam x seed; seed 2 of lam=1.0 failed
GAP = {("0.0", 0): 0.30, ("0.0", 1): 0.36, ("0.0", 2): 0.33, ("1.0", 0): 0.10, ("1.0", 1): 0.14, ("1.0", 2): None}
ACCURACY = {("0.0", 0): 0.86, ("0.0", 1): 0.85, ("0.0", 2): 0.87, ("1.0", 0): 0.82, ("1.0", 1): 0.83}


def job(num: int, lam: str, seed: int) -> JobRecord:
    gap = GAP[(lam, seed)]
    return JobRecord(
        status=records.COMPLETED if gap is not None else records.FAILED,
        overrides=[f"lam={lam}", f"seed={seed}", "experiment_type.n_low=200"],
        config={},
        config_hash=f"h{num}",
        start_time="2025-01-01T00:00:00+00:00",
        end_time="2025-01-01T00:00:01+00:00",
        duration_s=1.0,
        job_num=num,
        metrics={} if gap is None else {"dp_gap": gap, "accuracy": ACCURACY[(lam, seed)]},
        error=None if gap is not None else JobError(type="ValueError", message="diverged"),
    )


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    sweep_dir = tmp_path / "sweep"
    for num, (lam, seed) in enumerate(GAP):
        records.write_job_record(sweep_dir / str(num), job(num, lam, seed))
    return sweep_dir


def write_rules(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def validate_json(capsys: pytest.CaptureFixture[str], sweep: Path, rules: Path) -> tuple[int, dict[str, Any]]:
    code = main(["validate", str(sweep), "--rules", str(rules), "--json"])
    return code, json.loads(capsys.readouterr().out)


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


# ---- expressions ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("source", "values", "expected"),
    [
        ("accuracy > 0.8", {"accuracy": 0.85}, True),
        ("accuracy > 0.8 and dp_gap < 0.1", {"accuracy": 0.85, "dp_gap": 0.2}, False),
        ("lam == 0 or dp_gap < 0.2", {"lam": 0.0, "dp_gap": 0.3}, True),
        ("not (lam > 0.5)", {"lam": 1.0}, False),
        ("0.1 < dp_gap <= 0.3", {"dp_gap": 0.3}, True),
        ("abs(accuracy - 0.5) * 2 >= 0.6", {"accuracy": 0.2}, True),
        ("max(a, b) - min(a, b) < 1 % 3", {"a": 2.0, "b": 2.5}, True),
        ("a ** 2 // 1 == 9", {"a": 3.0}, True),
        ("-a < +a", {"a": 1.0}, True),
        ("model in ('llama', 'mistral')", {"model": "llama"}, True),
        ("model not in ['llama']", {"model": "llama"}, False),
        ("experiment_type.n_low == 200", {"experiment_type.n_low": 200}, True),
        ("status == 'completed'", {"status": "completed"}, True),
    ],
)
def test_expressions_evaluate_arithmetic_comparisons_and_logic(
    source: str, values: dict[str, Any], expected: bool
) -> None:
    assert Expression(source, "rules.x").evaluate(values) is expected


@pytest.mark.parametrize(
    ("source", "refused"),
    [
        ("__import__('os').system('true') == 0", "the call __import__('os').system(...) is not allowed"),
        ("accuracy.__class__ == 1", None),  # a dotted name, looked up as one name: never an attribute access
        ("[x for x in (1, 2)] == 1", "ListComp"),
        ("(lambda: 1)() == 1", "the call"),
        ("accuracy if lam else 1", "IfExp"),
        ("accuracy[0] > 1", "Subscript"),
        ("open('f') == 1", "the call open(...)"),
        ("a @ b == 1", "the operator MatMult"),
        ("a is None", "this comparison"),
        ("~a > 1", "Invert"),
        ("accuracy", "must be a condition"),
        ("accuracy + 1", "must be a condition"),
        ("accuracy >", "not an expression"),
        ("b'x' == a", "the constant b'x'"),
        ("f'{a}' == a", "JoinedStr"),
        ("(a := 1) == 1", "NamedExpr"),
    ],
)
def test_expressions_refuse_anything_but_the_whitelist(source: str, refused: str | None) -> None:
    if refused is None:
        expression = Expression(source, "rules.x")
        assert expression.names == ["accuracy.__class__"]
        with pytest.raises(MissingName):
            expression.evaluate({"accuracy": 1.0})
        return
    with pytest.raises(ConfigError) as caught:
        Expression(source, "rules.x")
    assert str(caught.value).startswith(f"rules.x={source}: ")
    assert refused in str(caught.value)


def test_arithmetic_on_text_is_refused_at_evaluation() -> None:
    expression = Expression("model * 1000000000 == 'x'", "rules.x")
    with pytest.raises(TypeError, match="not a number"):
        expression.evaluate({"model": "llama"})


def test_a_huge_power_overflows_instead_of_hanging() -> None:
    with pytest.raises(OverflowError):
        Expression("9 ** 9 ** 9 > 1", "rules.x").evaluate({})


# ---- the rules file -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "- a\n- b\n",
            "error: rules file=list: must be a mapping with the keys where, required, ranges, rules, compare",
        ),
        ("rangs: {}\n", "error: rangs={}: unknown section; allowed: where, required, ranges, rules, compare"),
        ("ranges: {dp_gap: {mn: 0}}\n", "error: ranges.dp_gap.mn=0: unknown key; allowed: min, max"),
        ("ranges: {dp_gap: {min: low}}\n", "error: ranges.dp_gap.min=low: must be a finite number"),
        ("ranges: {dp_gap: {min: 1, max: 0}}\n", "error: ranges.dp_gap.min=1.0: is above max (0); min must be <= max"),
        ("ranges: {dp_gap: 0.5}\n", "error: ranges.dp_gap=0.5: must be a mapping with min and/or max"),
        ("required: dp_gap\n", "error: required=dp_gap: must be a list of metric names"),
        ("rules: {r: 3}\n", "error: rules.r=3: must be an expression in quotes"),
        ("rules: {r: 'import os'}\n", "error: rules.r=import os: not an expression (invalid syntax)"),
        (
            "compare: {c: {metric: dp_gap, a: {lam: 0}, b: {lam: 1}, test: ttest}}\n",
            "error: compare.c.test=ttest: allowed: welch, mannwhitney",
        ),
        (
            "compare: {c: {metric: dp_gap, a: {lam: 0}, b: {lam: 1}, expect: bigger}}\n",
            "error: compare.c.expect=bigger: allowed: a_greater, b_greater, different",
        ),
        (
            "compare: {c: {metric: dp_gap, a: {lam: 0}, b: {lam: 1}, alpha: 5}}\n",
            "error: compare.c.alpha=5.0: must be between 0 and 1",
        ),
        ("compare: {c: {metric: dp_gap, a: {lam: 0}}}\n", "error: compare.c.b=null: is required"),
        (
            "compare: {c: {metric: dp_gap, a: {lam: 0}, b: {lam: 1}, tails: 2}}\n",
            "error: compare.c.tails=2: unknown key; allowed: metric, a, b, test, alpha, expect",
        ),
        ("compare: {c: {metric: dp_gap, a: lam=0, b: {lam: 1}}}\n", "error: compare.c.a=lam=0: must be a mapping"),
        ("where: {status: completed}\n", "error: rules file={}: has no checks"),
        ("ranges: {a: [1, 2}\n", "error: --rules="),
        # names the sweep does not have: a typo, refused with what it has
        ("rules: {r: 'acuracy > 0.5'}\n", "error: rules.r=acuracy > 0.5: 'acuracy' is no metric or parameter"),
        (
            "compare: {c: {metric: dp_gapp, a: {lam: 0}, b: {lam: 1}}}\n",
            "error: compare.c.metric=dp_gapp: no such metric in this sweep; available: dp_gap, accuracy",
        ),
        (
            "compare: {c: {metric: dp_gap, a: {lamda: 0}, b: {lam: 1}}}\n",
            "error: compare.c.a.lamda=0: no such swept parameter; available: lam, seed, experiment_type.n_low",
        ),
        ("where: {lamda: 0}\nrequired: [dp_gap]\n", "error: where.lamda=0: no such swept parameter"),
    ],
)
def test_a_bad_rules_file_is_one_line_naming_the_key_exit_2(
    sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    rules = write_rules(tmp_path, text)

    code = main(["validate", str(sweep), "--rules", str(rules)])

    assert code == 2
    assert one_error_line(capsys).startswith(expected)


def test_a_missing_rules_file_is_exit_2(sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["validate", str(sweep), "--rules", str(tmp_path / "nope.yaml")])

    assert code == 2
    assert one_error_line(capsys).startswith(f"error: --rules={tmp_path / 'nope.yaml'}: cannot read the rules file")


def test_the_shipped_example_rules_file_parses() -> None:
    rules = load_rules(ROOT / "examples" / "rules.yaml")

    assert rules.required
    assert rules.ranges
    assert rules.rules
    assert [c.test for c in rules.compare] == ["welch"]


# ---- checks ---------------------------------------------------------------------------------------------------
def test_ranges_required_and_rules_pass_or_fail_per_job(
    sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = write_rules(
        tmp_path,
        "required: [dp_gap]\n"
        "ranges:\n  dp_gap: {max: 0.35}\n"
        "rules:\n  penalised_is_fairer: 'lam == 0 or dp_gap < 0.12'\n",
    )

    code, out = validate_json(capsys, sweep, rules)

    assert code == 1
    failed = {(c["check"], c["job"]): c["message"] for c in out["checks"] if not c["passed"]}
    assert failed == {
        ("ranges.dp_gap", "1"): "0.36 outside [-inf, 0.35]",
        ("rules.penalised_is_fairer", "4"): "false for lam=1, dp_gap=0.14",
        ("required.dp_gap", "5"): "missing",
        ("ranges.dp_gap", "5"): "missing",
        ("rules.penalised_is_fairer", "5"): "no value for dp_gap",
    }
    assert out["checks_total"] == 18
    assert out["checks_passed"] == 13
    assert out["quality"] == pytest.approx(13 / 18)
    quality = {j["job"]: j["quality"] for j in out["jobs"]}
    assert quality == {"0": 1.0, "1": pytest.approx(2 / 3), "2": 1.0, "3": 1.0, "4": pytest.approx(2 / 3), "5": 0.0}
    assert out["passed"] is False


def test_all_checks_passing_exits_0_and_where_limits_the_jobs(
    sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = write_rules(
        tmp_path,
        "where: {status: completed}\nrequired: [dp_gap, accuracy]\nranges: {dp_gap: {min: 0, max: 0.5}}\n",
    )

    code = main(["validate", str(sweep), "--rules", str(rules)])

    out = capsys.readouterr().out
    assert code == 0
    assert out.splitlines()[-1] == "sweep quality: 1.000 (15/15 checks passed): PASS"
    assert ["required.dp_gap", "5/5"] in [line.split() for line in out.splitlines()]


def test_table_names_the_failing_jobs(sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = write_rules(tmp_path, "ranges: {accuracy: {min: 0.84}}\n")

    code = main(["validate", str(sweep), "--rules", str(rules)])

    out = capsys.readouterr().out
    assert code == 1
    line = next(line for line in out.splitlines() if line.startswith("ranges.accuracy"))
    assert line.split()[1] == "3/6"
    assert "job 3: 0.82 outside [0.84, inf]; job 4: 0.83 outside [0.84, inf]; job 5: missing" in line
    assert out.splitlines()[-1] == "sweep quality: 0.500 (3/6 checks passed): FAIL"


# ---- comparisons over seeds -----------------------------------------------------------------------------------
def test_welch_comparison_matches_scipy_and_reports_cohens_d(
    sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = write_rules(
        tmp_path,
        "compare:\n  fairer:\n    metric: dp_gap\n    a: {lam: 0}\n    b: {lam: 1.0}\n    expect: a_greater\n",
    )

    code, out = validate_json(capsys, sweep, rules)

    assert code == 0
    (result,) = out["comparisons"]
    a, b = [0.30, 0.36, 0.33], [0.10, 0.14]  # the failed job has no value
    assert result["values_a"] == a
    assert result["values_b"] == b
    expected = stats.ttest_ind(a, b, equal_var=False, alternative="greater")
    assert result["p_value"] == pytest.approx(float(expected.pvalue), rel=1e-12)
    assert result["statistic"] == pytest.approx(float(expected.statistic), rel=1e-12)
    # Cohen's d by hand: pooled sample variance
    mean_a, mean_b = sum(a) / 3, sum(b) / 2
    var_a = sum((x - mean_a) ** 2 for x in a) / 2
    var_b = sum((x - mean_b) ** 2 for x in b) / 1
    pooled = ((2 * var_a + 1 * var_b) / 3) ** 0.5
    assert result["effect_size"] == pytest.approx((mean_a - mean_b) / pooled)
    assert result["effect_name"] == "cohens_d"
    assert result["passed"] is True
    assert out["quality"] == 1.0


def test_mann_whitney_comparison_matches_scipy_and_reports_rank_biserial(
    sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = write_rules(
        tmp_path,
        "compare:\n  acc:\n    metric: accuracy\n    a: {lam: 0}\n    b: {lam: 1}\n    test: mannwhitney\n"
        "    expect: b_greater\n    alpha: 0.05\n",
    )

    code, out = validate_json(capsys, sweep, rules)

    assert code == 1  # lam=1 is less accurate, not more
    (result,) = out["comparisons"]
    a, b = [0.86, 0.85, 0.87], [0.82, 0.83]
    expected = stats.mannwhitneyu(a, b, alternative="less")
    assert result["p_value"] == pytest.approx(float(expected.pvalue), rel=1e-12)
    assert result["effect_size"] == pytest.approx(2 * float(expected.statistic) / 6 - 1)  # every a above every b: 1
    assert result["effect_size"] == pytest.approx(1.0)
    assert result["passed"] is False
    assert "not significant" in result["message"]


def test_a_comparison_with_fewer_than_two_jobs_a_side_fails(
    sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = write_rules(tmp_path, "compare:\n  c: {metric: dp_gap, a: {lam: 0, seed: 0}, b: {lam: 1}}\n")

    code, out = validate_json(capsys, sweep, rules)

    assert code == 1
    assert out["comparisons"][0]["message"] == "needs at least 2 jobs with dp_gap on each side (a: 1, b: 2)"
    assert out["comparisons"][0]["p_value"] is None


def test_a_comparison_of_constant_sides_fails_without_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep_dir = tmp_path / "flat"
    for num, lam in enumerate(["0", "0", "1", "1"]):
        record = job(num, "0.0", 0)
        flat = JobRecord(**{**record.to_dict(), "overrides": [f"lam={lam}", f"seed={num}"], "error": None})
        records.write_job_record(sweep_dir / str(num), flat)
    rules = write_rules(tmp_path, "compare:\n  c: {metric: dp_gap, a: {lam: 0}, b: {lam: 1}}\n")

    code, out = validate_json(capsys, sweep_dir, rules)

    assert code == 1
    assert out["comparisons"][0]["message"] == "no p-value: both sides have no spread"
