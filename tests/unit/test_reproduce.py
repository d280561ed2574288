"""What decides REPRODUCED / DIFFERS, on hand-made records (the reruns themselves: tests/integration)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from explaunch.errors import ExplaunchError
from explaunch.review import rerun_comparison as logic
from explaunch.review.rerun import merge_overrides
from explaunch.sweepdir import records


def record(metrics: dict[str, float], info: dict[str, Any] | None = None, **config: Any) -> records.JobRecord:
    return records.JobRecord(
        status=records.COMPLETED,
        overrides=[],
        config={"seed": 0, "batch": 8, **config},
        config_hash="h",
        start_time="2025-01-01T00:00:00+00:00",
        end_time="2025-01-01T00:00:01+00:00",
        duration_s=1.0,
        metrics=metrics,
        info=info or {},
    )


def statuses(rows: list[logic.Row]) -> dict[str, str]:
    return {row.name: row.status for row in rows}


def test_timings_are_informational_unless_a_tolerance_is_given() -> None:
    a = record({"throughput_e2e_tokens_per_s": 100.0, "latency_batch_p50_s": 0.5, "output_tokens": 64.0})
    b = record({"throughput_e2e_tokens_per_s": 50.0, "latency_batch_p50_s": 0.55, "output_tokens": 64.0})
    rows = logic.compare_results(a, b)
    assert statuses(rows) == {
        "status": "same",
        "throughput_e2e_tokens_per_s": "changed",
        "latency_batch_p50_s": "changed",
        "output_tokens": "same",
    }
    assert next(r.note for r in rows if r.name == "throughput_e2e_tokens_per_s") == "-50.0%"
    strict = statuses(logic.compare_results(a, b, rtol=0.2))
    assert strict["throughput_e2e_tokens_per_s"] == "differs"  # 50 % off
    assert strict["latency_batch_p50_s"] == "changed"  # 10 % off, within 20 %


def test_an_old_record_is_compared_under_the_new_metric_names(tmp_path: Path) -> None:
    """A job recorded before the renames (``throughput_tokens_per_s``, kWh per component) against a rerun that
    records the new names: the same metrics side by side, in the same unit, none missing."""
    old = record({"throughput_tokens_per_s": 100.0, "energy_cpu_kwh": 1e-5, "memory_peak_rss_mb": 512.0})
    new = record({"throughput_e2e_tokens_per_s": 110.0, "energy_cpu_joules": 36.0, "memory_peak_rss_mib": 512.0})
    records.write_job_record(tmp_path / "old", old)
    records.write_job_record(tmp_path / "new", new)

    rows = {r.name: r for r in logic.compare(tmp_path / "old", tmp_path / "new").rows if r.section == "measured"}

    assert set(rows) == {"throughput_e2e_tokens_per_s", "energy_cpu_joules", "memory_peak_rss_mib"}
    assert rows["throughput_e2e_tokens_per_s"].note == "+10.0%"
    assert rows["energy_cpu_joules"].original == pytest.approx(36.0)
    assert rows["energy_cpu_joules"].status == "same"
    assert rows["memory_peak_rss_mib"].status == "same"


def test_deterministic_outputs_must_be_equal_exactly() -> None:
    a = record({"accuracy": 0.9, "flops": 1e9}, {"output_sha256": "aa"})
    b = record({"accuracy": 0.9000000001, "flops": 1e9}, {"output_sha256": "bb"})
    assert statuses(logic.compare_results(a, b)) == {
        "status": "same",
        "output_sha256": "differs",
        "accuracy": "differs",
        "flops": "same",
    }
    assert statuses(logic.compare_results(a, b, ignore=["accuracy", "output_*"])) == {"status": "same", "flops": "same"}


def test_a_missing_deterministic_metric_differs_a_missing_timing_does_not() -> None:
    a = record({"accuracy": 0.9, "energy_joules": 3.0})
    b = record({})
    assert statuses(logic.compare_results(a, b)) == {
        "status": "same",
        "accuracy": "differs",
        "energy_joules": "changed",
    }


def test_config_differences_are_named_and_code_paths_are_not_differences() -> None:
    a = record({}, experiment_type={"command": ["/old/python", "/old/code/score.py"]})
    b = record({}, experiment_type={"command": ["/new/python", "/new/code/score.py"]}, batch=16)
    a = records.JobRecord(**{**a.to_dict(), "snapshot": {"code_dir": "/old/code", "executable": "/old/python"}})
    b = records.JobRecord(**{**b.to_dict(), "snapshot": {"code_dir": "/new/code", "executable": "/new/python"}})
    rows = logic.compare_config(a, b)
    assert [(r.name, r.original, r.rerun, r.status) for r in rows] == [("config.batch", 8, 16, "differs")]


def test_extra_overrides_replace_recorded_ones_and_the_seed_is_pinned() -> None:
    merged = merge_overrides(["model=llama", "+params.lr=0.1"], ["params.lr=0.2"], seed=7)
    assert merged == ["model=llama", "params.lr=0.2", "seed=7"]
    assert merge_overrides(["seed=3"], [], seed=3) == ["seed=3"]


def test_a_redacted_override_must_be_given_again() -> None:
    with pytest.raises(ExplaunchError, match=r"override tracking.api_token: its value was redacted .* --override"):
        merge_overrides(["tracking.api_token=<redacted>"], [], seed=None)
    merged = merge_overrides(["tracking.api_token=<redacted>"], ["tracking.api_token=abc"], seed=None)
    assert merged == ["tracking.api_token=abc"]


def test_patch_files_name_what_differs_between_two_patches(tmp_path: Path) -> None:
    one = "diff --git a/x.py b/x.py\n+a\ndiff --git a/y.py b/y.py\n+b\n"
    two = "diff --git a/x.py b/x.py\n+a\ndiff --git a/y.py b/y.py\n+c\ndiff --git a/z.py b/z.py\n+d\n"
    (tmp_path / "1.patch").write_text(one)
    (tmp_path / "2.patch").write_text(two)
    assert list(logic.patch_files(tmp_path / "1.patch")) == ["x.py", "y.py"]
    assert logic._patch_note(tmp_path / "1.patch", tmp_path / "2.patch") == "files: y.py, z.py"
