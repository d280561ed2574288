"""The sweep's own controls on real ``python main.py -m`` sweeps of the probe type: stop at a target, budgets,
start order and cooldown, resource limits that hold launches (``hydra.sweeper.*``, explaunch.launch.controls)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from explaunch.sweepdir import records
from explaunch.sweepdir.ledger import Ledger
from explaunch.sweepdir.records import CONTROLS_FILE
from tests.integration.helpers import run_main

pytestmark = pytest.mark.slow
PROBE = ("experiment_type=probe", "experiment_type.duration_s=0.1", "tracking=none", "hydra.launcher.n_jobs=1")


def controls(sweep: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((sweep / CONTROLS_FILE).read_text())
    return data


def test_a_met_target_stops_the_sweep_with_exit_0_and_names_the_job(tmp_path: Path) -> None:
    sweep = tmp_path / "s"
    proc = run_main(
        "-m", "seed=range(6)", *PROBE, 'hydra.sweeper.stop_when="slept_s >= 0.05 and batch_size == 8"',
        f"hydra.sweep.dir={sweep}", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "target reached: stop_when" in proc.stderr and "met by job 0" in proc.stderr
    assert "to finish it" not in proc.stderr
    done = [r for _, r in records.iter_job_records(sweep)]
    assert [r.status for r in done] == ["completed"]
    assert (records.read_sweep_record(sweep).stop_reason or "").startswith("stop_when")
    assert "met by job 0" in controls(sweep)["stop_when"]["met"]


def test_a_rule_that_is_never_met_runs_every_job(tmp_path: Path) -> None:
    sweep = tmp_path / "s"
    proc = run_main(
        "-m", "seed=range(3)", *PROBE, 'hydra.sweeper.stop_when="slept_s > 1000"', f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert len(list(records.iter_job_records(sweep))) == 3
    assert controls(sweep)["stop_when"]["met"] is None


def test_a_spent_budget_stops_launching_and_says_what_was_spent(tmp_path: Path) -> None:
    sweep = tmp_path / "s"
    proc = run_main(
        "-m", "seed=range(6)", *PROBE, "experiment_type.duration_s=0.6", "hydra.sweeper.budget.wall_hours=0.0004",
        f"hydra.sweep.dir={sweep}", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "stopped early: budget: wall-clock budget" in proc.stderr
    ran = list(records.iter_job_records(sweep))
    assert 1 <= len(ran) < 6
    spent = controls(sweep)["budget"]["wall_hours"]
    assert spent["budget"] == 0.0004 and spent["spent"] > 0 and spent["per_job"] > 0
    assert (records.read_sweep_record(sweep).stop_reason or "").startswith("budget")
    assert records.read_sweep_record(sweep).controls["budget"]["wall_hours"]["budget"] == 0.0004


def test_shuffled_order_is_seeded_recorded_and_repeatable_with_its_seed(tmp_path: Path) -> None:
    def started_order(sweep: Path) -> list[int]:
        return [entry.job_num for entry in Ledger(sweep).latest.values()]

    first = tmp_path / "a"
    proc = run_main(
        "-m", "seed=range(8)", *PROBE, "hydra.sweeper.order=shuffle", f"hydra.sweep.dir={first}", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    seed = controls(first)["order"]["seed"]
    assert isinstance(seed, int) and f"shuffle order (seed {seed})" in proc.stdout + proc.stderr
    order = started_order(first)
    assert sorted(order) == list(range(8)) and order != list(range(8))
    again = tmp_path / "b"
    proc = run_main(
        "-m", "seed=range(8)", *PROBE, "hydra.sweeper.order=shuffle", f"hydra.sweeper.order_seed={seed}",
        f"hydra.sweep.dir={again}", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert started_order(again) == order


def test_interleave_spreads_each_configurations_jobs_and_cooldown_waits_between_jobs(tmp_path: Path) -> None:
    sweep = tmp_path / "s"
    proc = run_main(
        "-m", "batch=1,2", "seed=range(3)", *PROBE, "hydra.sweeper.order=interleave", "hydra.sweeper.cooldown_s=0.3",
        f"hydra.sweep.dir={sweep}", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    batches = [dict(o.split("=", 1) for o in e.overrides)["batch"] for e in Ledger(sweep).latest.values()]
    assert batches == ["1", "2", "1", "2", "1", "2"]
    waited = controls(sweep)["cooldown"]
    assert waited["cooldown_s"] == 0.3 and waited["waited_s"] >= 0.3 * 4


def test_a_machine_over_its_limit_holds_new_jobs_and_the_time_held_is_recorded(tmp_path: Path) -> None:
    sweep = tmp_path / "s"
    proc = run_main(
        "-m", "seed=range(3)", *PROBE, "hydra.sweeper.limits.memory_percent=1", "hydra.sweeper.max_duration_h=0.0005",
        f"hydra.sweep.dir={sweep}", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 1
    assert (proc.stdout + proc.stderr).count("holding new jobs: memory") == 1
    assert not list(records.iter_job_records(sweep))  # held until the sweep's own time limit: nothing started
    held = controls(sweep)["limits"]
    assert held["memory_percent"] == 1 and held["held_s"] >= 1 and held["holds"] == 1


def test_with_no_control_set_no_controls_file_is_written(tmp_path: Path) -> None:
    sweep = tmp_path / "s"
    proc = run_main("-m", "seed=0,1", *PROBE, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert not (sweep / CONTROLS_FILE).exists()
