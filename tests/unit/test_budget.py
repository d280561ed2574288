"""hydra.sweeper.budget: what jobs spent, read from their records, and whether the next jobs would pass a budget."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from explaunch.launch.budget import Budget, emissions_kg, energy_kwh, gpu_count, gpu_hours
from explaunch.sweepdir.records import JobRecord

KWH = 3.6e6


def record(
    duration_s: float = 10.0,
    joules: float | None = None,
    emissions: float | None = None,
    metrics: dict[str, float] | None = None,
    hardware: dict[str, Any] | None = None,
    gpus: int = 0,
    energy: dict[str, Any] | None = None,
    status: str = "completed",
) -> JobRecord:
    whole = dict(energy or {})
    if joules is not None:
        whole["joules"] = joules
    if emissions is not None:
        whole["emissions_kg"] = emissions
    return JobRecord(
        status=status,
        overrides=[],
        config={"hardware": hardware or {"device": "auto", "num_gpus": 0, "gpu_ids": []}},
        config_hash=None,
        start_time="2026-01-01T00:00:00.000+00:00",
        end_time="2026-01-01T00:00:10.000+00:00",
        duration_s=duration_s,
        metrics=metrics or {},
        energy=whole,
        snapshot={"gpus": [{"index": i, "name": "H100"} for i in range(gpus)]},
    )


def test_energy_and_emissions_from_the_whole_job_else_the_metrics() -> None:
    assert energy_kwh(record(joules=0.36e6)) == pytest.approx(0.1)
    assert energy_kwh(record(metrics={"job_energy_joules": 7.2e6, "energy_joules": 1.0})) == pytest.approx(2.0)
    assert energy_kwh(record(metrics={"energy_joules": 3.6e6})) == pytest.approx(1.0)
    assert energy_kwh(record()) is None
    assert emissions_kg(record(emissions=0.5, metrics={"job_energy_emissions_kg": 9.0})) == 0.5
    assert emissions_kg(record(metrics={"job_energy_emissions_kg": 0.25})) == 0.25
    assert emissions_kg(record(metrics={"energy_emissions_kg": 0.125})) == 0.125
    assert emissions_kg(record()) is None


def test_gpu_count_and_gpu_hours() -> None:
    assert gpu_count(record()) == 0  # a CPU machine: no GPU seen
    assert gpu_count(record(gpus=4)) == 4  # every GPU it saw
    assert gpu_count(record(gpus=4, hardware={"device": "cpu"})) == 0
    assert gpu_count(record(gpus=4, hardware={"device": "cuda", "gpu_ids": [1, 2]})) == 2
    assert gpu_count(record(gpus=4, hardware={"device": "cuda", "num_gpus": 3, "gpu_ids": []})) == 3
    measured = {"components": {"gpu": {"joules": 1.0, "devices": {"GPU-a": 0.5, "GPU-b": 0.5}}}}
    assert gpu_count(record(gpus=8, energy=measured)) == 2
    assert gpu_hours(record(duration_s=1800, gpus=2)) == pytest.approx(1.0)
    assert gpu_hours(record(duration_s=1800)) == 0.0


def test_a_real_probe_job_record(tmp_path: Path) -> None:
    """The fields of a CPU probe job's job.json as the sweep writes them (trimmed)."""
    data = {
        "status": "completed",
        "overrides": ["experiment_type=probe", "seed=0", "tracking=none"],
        "config": {"hardware": {"device": "auto", "num_gpus": 0, "gpu_ids": []}},
        "config_hash": "x",
        "start_time": "2026-12-05T12:26:28.724+00:00",
        "end_time": "2026-12-05T12:26:28.956+00:00",
        "duration_s": 0.231,
        "metrics": {"job_energy_joules": 1.9135, "job_energy_emissions_kg": 1.96e-07},
        "energy": {"joules": 1.9135, "emissions_kg": 1.96e-07, "components": {"ram": {"joules": 1.9135}}},
        "snapshot": {"gpus": []},
        "schema_version": 1,
    }
    (tmp_path / "job.json").write_text(json.dumps(data))
    job = JobRecord.from_dict(json.loads((tmp_path / "job.json").read_text()))
    budget = Budget({"energy_kwh": 1.0, "emissions_kg": 1.0, "gpu_hours": 1.0}, total_jobs=2, started_at=0.0)
    budget.add(job)
    spent = budget.spent()
    assert spent["energy_kwh"]["spent"] == pytest.approx(1.9135 / KWH)
    assert spent["emissions_kg"]["spent"] == pytest.approx(1.96e-07)
    assert spent["gpu_hours"]["spent"] == 0.0


def test_the_next_job_is_projected_at_the_mean_per_job_so_far() -> None:
    budget = Budget({"energy_kwh": 0.002}, total_jobs=10, started_at=0.0)
    assert budget.would_exceed(0.0) is None  # nothing known yet
    for joules in (0.0004, 0.0004, 0.0004):
        budget.add(record(joules=joules * KWH))
    assert budget.would_exceed(0.0) is None  # 0.0012 + 0.0004 <= 0.002
    assert budget.would_exceed(0.0, next_jobs=2) is None  # exactly at the budget is not past it
    assert budget.would_exceed(0.0, next_jobs=3) == (
        "energy budget 0.002 kWh: 0.0012 spent, the next 3 jobs would pass it (~0.0004 kWh per job)"
    )
    budget.add(record(joules=0.0006 * KWH))
    assert budget.would_exceed(0.0) == (
        "energy budget 0.002 kWh: 0.0018 spent, the next job would pass it (~0.00045 kWh per job)"
    )
    budget.add(record(joules=0.0004 * KWH))
    assert budget.would_exceed(0.0) == "energy budget 0.002 kWh: 0.0022 spent, reached"


def test_jobs_that_measured_nothing_do_not_lower_the_mean() -> None:
    budget = Budget({"energy_kwh": 1.0}, total_jobs=4, started_at=0.0)
    budget.add(record(joules=0.6 * KWH))
    budget.add(record(status="failed"))  # failed before measuring anything
    assert budget.spent()["energy_kwh"] == {"budget": 1.0, "spent": 0.6, "per_job": 0.6, "projected": 0.6 + 2 * 0.6}
    assert budget.would_exceed(0.0) is not None


def test_gpu_hours_budget() -> None:
    budget = Budget({"gpu_hours": 2.0}, total_jobs=3, started_at=0.0)
    budget.add(record(duration_s=1800, gpus=2))  # 1 GPU-hour
    assert budget.would_exceed(0.0) is None
    budget.add(record(duration_s=900, gpus=2))  # 0.5
    reason = budget.would_exceed(0.0)
    assert reason == "GPU budget 2 GPU-hours: 1.5 spent, the next job would pass it (~0.75 GPU-hours per job)"


def test_wall_hours_count_from_the_sweep_start_per_job_done() -> None:
    budget = Budget({"wall_hours": 1.0}, total_jobs=5, started_at=1000.0)
    assert budget.would_exceed(1000.0 + 3000) is None  # no job done yet: no projection
    assert budget.would_exceed(1000.0 + 3600) == "wall-clock budget 1 hours: 1 spent, reached"
    budget.add(record())
    budget.add(record())
    assert budget.would_exceed(1000.0 + 1800) is None  # 0.5 h for 2 jobs: the next at 0.75 h
    reason = budget.would_exceed(1000.0 + 2520)  # 0.7 h, 0.35 h per job
    assert reason == "wall-clock budget 1 hours: 0.7 spent, the next job would pass it (~0.35 hours per job)"
    spent = budget.spent(1000.0 + 1800)
    assert spent["wall_hours"] == {"budget": 1.0, "spent": 0.5, "per_job": 0.25, "projected": 0.5 + 3 * 0.25}
    assert budget.spent() == {}  # wall hours need the time


def test_only_the_budgets_set_are_watched_and_reported() -> None:
    budget = Budget({"emissions_kg": 0.5}, total_jobs=1, started_at=0.0)
    budget.add(record(joules=1e12, duration_s=1e9, gpus=8, emissions=0.1))
    assert list(budget.spent()) == ["emissions_kg"]
    assert budget.would_exceed(1e12) is None
    assert Budget({}, total_jobs=1, started_at=0.0).would_exceed(1e12) is None


def test_an_unknown_budget_name_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown budget energy"):
        Budget({"energy": 1.0}, total_jobs=1, started_at=0.0)
