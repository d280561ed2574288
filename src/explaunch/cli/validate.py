"""``explaunch validate SWEEP_DIR --rules rules.yaml``: check a sweep's results against expectations (ranges, required
metrics, expressions, comparisons of two settings over seeds). Exit 0 when every check passes, 1 when one fails, 2
for a bad rules file. The rules file is read in explaunch.review.rules, checked in
explaunch.review.validation."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from explaunch.errors import EXIT_FAILED
from explaunch.review import rows as review
from explaunch.review import validation
from explaunch.review.rules import load_rules
from explaunch.table import cell, format_table

FAILURES_SHOWN = 3  # per check, in the table


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "validate",
        help="check a sweep's results against a rules file (ranges, expressions, significance over seeds)",
        description="Check a sweep's jobs against the rules in a YAML file (see examples/rules.yaml): expected "
        "ranges, required metrics, expressions over a job's metrics and parameters, and Welch / Mann-Whitney "
        "comparisons of two settings over seeds. Exit 0: all pass; 1: a check failed; 2: bad rules file.",
    )
    parser.add_argument("sweep_dir", type=Path, help="a multirun/<date>/<time> folder (or one run's folder)")
    parser.add_argument("--rules", type=Path, required=True, help="the rules file (YAML)")
    parser.add_argument("--json", action="store_true", help="print the outcome as JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    rules = load_rules(args.rules)
    rows = review.load_rows(args.sweep_dir)
    outcome = validation.validate(rules, rows, str(args.sweep_dir))
    print(json.dumps(outcome.to_dict(), indent=2) if args.json else render(outcome))
    return 0 if outcome.passed else EXIT_FAILED


def render(outcome: validation.Validation) -> str:
    parts = []
    if outcome.checks:
        parts.append(format_table(check_rows(outcome.checks), ("check", "passed", "failures")))
    if outcome.comparisons:
        columns = ("comparison", "test", "n_a", "n_b", "mean_a", "mean_b", "p_value", "effect", "result")
        parts.append(format_table([comparison_row(c) for c in outcome.comparisons], columns))
    if outcome.jobs and outcome.checks:
        params = [k for k in outcome.jobs[0] if k not in ("job", "status", "quality", "passed", "total", "failed")]
        job_rows = [{**job, "failed": ", ".join(job["failed"])} for job in outcome.jobs]
        parts.append(format_table(job_rows, ("job", "status", *params, "quality", "failed")))
    verdict = "PASS" if outcome.passed else "FAIL"
    quality = "n/a" if outcome.quality is None else f"{outcome.quality:.3f}"
    parts.append(f"sweep quality: {quality} ({outcome.passed_count}/{outcome.total} checks passed): {verdict}")
    return "\n\n".join(parts)


def check_rows(checks: list[validation.Check]) -> list[dict[str, Any]]:
    by_name: dict[str, list[validation.Check]] = {}
    for check in checks:
        by_name.setdefault(check.check, []).append(check)
    rows = []
    for name, results in by_name.items():
        failed = [c for c in results if not c.passed]
        shown = "; ".join(f"job {c.job}: {c.message}" for c in failed[:FAILURES_SHOWN])
        if len(failed) > FAILURES_SHOWN:
            shown += f"; {len(failed) - FAILURES_SHOWN} more"
        rows.append({"check": name, "passed": f"{len(results) - len(failed)}/{len(results)}", "failures": shown})
    return rows


def comparison_row(result: validation.ComparisonResult) -> dict[str, Any]:
    effect_label = "d" if result.effect_name == "cohens_d" else "r"
    return {
        "comparison": result.check,
        "test": f"{result.test} ({result.expect})",
        "n_a": len(result.values_a),
        "n_b": len(result.values_b),
        "mean_a": result.mean_a,
        "mean_b": result.mean_b,
        "p_value": result.p_value,
        "effect": None if result.effect_size is None else f"{effect_label}={cell(result.effect_size)}",
        "result": ("pass: " if result.passed else "FAIL: ") + result.message,
    }
