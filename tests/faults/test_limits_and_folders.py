"""The sweep's own time limit, and a sweep folder on a read-only filesystem, met as a user meets them."""

from __future__ import annotations

from pathlib import Path

import pytest

from explaunch.sweepdir import records
from tests.faults.helpers import statuses, tmpfs
from tests.integration.helpers import run_main

pytestmark = pytest.mark.slow
PROBE = ("experiment_type=probe", "tracking=none", "hydra/launcher=basic")


def test_the_sweep_time_limit_starts_no_job_after_it_and_a_rerun_with_more_time_finishes(tmp_path: Path) -> None:
    """``hydra.sweeper.max_duration_h=0.001`` (3.6 s) over six 1 s jobs: the jobs begun in time complete (the last
    one's limit capped by what is left, so it may end ``timeout``), none starts after the limit, the summary and
    ``sweep.json`` say why; the same command with more time runs only what is not completed."""
    sweep = tmp_path / "sweep"
    grid = ("-m", "seed=range(0,6)", *PROBE, "experiment_type.duration_s=1", f"hydra.sweep.dir={sweep}")
    first = run_main(*grid, "hydra.sweeper.max_duration_h=0.001", cwd=tmp_path, timeout=300)
    assert first.returncode == 1, first.stderr[-3000:]
    ran = statuses(sweep)
    assert set(ran.values()) <= {records.COMPLETED, records.TIMEOUT} and len(ran) < 6
    sweep_record = records.read_sweep_record(sweep)
    assert sweep_record.stop_reason == "max_duration_h=0.001 reached"
    assert len(ran) + len(sweep_record.not_run) == 6
    assert "stopped early: max_duration_h=0.001 reached" in first.stderr
    assert f"to finish it: run the same command again with hydra.sweep.dir={sweep}" in first.stderr

    again = run_main(*grid, "hydra.sweeper.max_duration_h=1", cwd=tmp_path, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    done = list(ran.values()).count(records.COMPLETED)
    assert f"{done} of 6 jobs already done, {6 - done} to run" in again.stdout + again.stderr
    assert statuses(sweep) == dict.fromkeys(range(6), records.COMPLETED)


def test_a_sweep_folder_on_a_read_only_filesystem_is_one_line_exit_2_and_no_job(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro", "ro,size=1m") as read_only:
        proc = run_main("-m", "seed=0,1", *PROBE, f"hydra.sweep.dir={read_only}/sweep", cwd=tmp_path, timeout=300)
        assert proc.returncode == 2
        assert proc.stderr.strip() == (
            f"error: hydra.sweep.dir={read_only}/sweep: cannot be created: {read_only} is read-only"
        )
        assert list(read_only.iterdir()) == []
