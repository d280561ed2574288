"""Experiment types beyond LLM inference, run as users run them."""

from __future__ import annotations

import statistics
from itertools import pairwise
from pathlib import Path

import pytest

from explaunch import records
from tests.integration.helpers import run_main

pytestmark = pytest.mark.slow


def test_fairness_grid_shows_the_accuracy_fairness_trade_off(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = run_main("-m", "+experiment=fairness_grid", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = [r for _, r in records.iter_job_records(sweep)]
    assert len(found) == 15 and {r.status for r in found} == {"completed"}
    by_lam: dict[float, list[records.JobRecord]] = {}
    for record in found:
        by_lam.setdefault(record.config["lam"], []).append(record)
    lams = sorted(by_lam)
    assert lams == [0.0, 0.1, 0.2, 0.5, 1.0] and all(len(by_lam[lam]) == 3 for lam in lams)

    def mean(lam: float, metric: str) -> float:
        return statistics.mean(r.metrics[metric] for r in by_lam[lam])

    gaps = [mean(lam, "demographic_parity_difference") for lam in lams]
    accuracy = [mean(lam, "accuracy") for lam in lams]
    assert all(later < earlier for earlier, later in pairwise(gaps))  # the gap shrinks
    assert gaps[-1] < gaps[0] / 2
    assert all(later <= earlier + 0.002 for earlier, later in pairwise(accuracy))
    assert accuracy[-1] < accuracy[0] - 0.01  # and accuracy pays for it
    record = by_lam[0.0][0]
    for metric in ("balanced_accuracy", "equalized_odds_difference", "accuracy_group0", "accuracy_group1",
                   "train_time_s", "energy_joules"):  # fmt: skip
        assert metric in record.metrics, metric
