"""Faults of the sweep folder, met as a user meets them: a second sweep on a folder in use, a folder that cannot be
created, a disk that fills up mid-sweep (a real full filesystem: a small tmpfs, when root may mount one)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from explaunch.sweepdir import records
from explaunch.sweepdir.ledger import Ledger
from tests.conftest import MAIN
from tests.faults.helpers import fill, tmpfs
from tests.integration.helpers import run_main

pytestmark = pytest.mark.slow
PROBE = ("experiment_type=probe", "tracking=none", "hydra/launcher=basic")


def statuses(sweep_dir: Path) -> dict[int | None, str]:
    return {r.job_num: r.status for _, r in records.iter_job_records(sweep_dir)}


def start_sweep(*args: str, cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "HYDRA_FULL_ERROR": "0"}
    return subprocess.Popen(
        [sys.executable, str(MAIN), *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for(path: Path, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.1)


def test_a_second_sweep_on_a_folder_in_use_refuses_in_one_line_and_the_first_runs_on(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    args = ("-m", "seed=range(0,4)", *PROBE, "experiment_type.duration_s=2", f"hydra.sweep.dir={sweep}")
    first = start_sweep(*args, cwd=tmp_path)
    wait_for(sweep / "plan.json")
    second = run_main(*args, cwd=tmp_path)
    _, first_err = first.communicate(timeout=300)

    assert second.returncode == 1
    lines = second.stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: sweep folder {sweep} is in use by another sweep (pid {first.pid} on ")
    assert "started 20" in lines[-1] and "Traceback" not in second.stderr
    assert first.returncode == 0, first_err[-2000:]
    assert statuses(sweep) == dict.fromkeys(range(4), "completed")
    assert len((sweep / "ledger.jsonl").read_text().splitlines()) == 4  # the refused sweep appended nothing

    again = run_main(*args, cwd=tmp_path)  # the same command after the first finished: a resume, as before
    assert again.returncode == 0, again.stderr[-2000:]
    assert "4 of 4 jobs already done, 0 to run" in again.stdout + again.stderr


def test_a_sweep_folder_that_cannot_be_created_is_one_line_exit_2_and_nothing_created(tmp_path: Path) -> None:
    blocker = tmp_path / "results"
    blocker.write_text("a file where a folder should be")
    proc = run_main("-m", "seed=0,1", *PROBE, f"hydra.sweep.dir={blocker}/sweep", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"error: hydra.sweep.dir={blocker}/sweep: cannot be created: {blocker} is a file, not a folder"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs: a filesystem that really fills up."""
    with tmpfs(tmp_path / "disk", "size=2m") as disk:
        yield disk


def test_a_full_disk_stops_the_sweep_keeps_what_was_written_and_a_rerun_finishes(small_disk: Path) -> None:
    sweep = small_disk / "sweep"
    args = ("-m", "seed=range(0,6)", *PROBE, "experiment_type.duration_s=1", f"hydra.sweep.dir={sweep}")
    first = start_sweep(*args, cwd=small_disk.parent)
    try:
        wait_for(sweep / "1" / "job.json")
        filler = fill(small_disk)
        _, stderr = first.communicate(timeout=300)
    finally:
        first.kill()
        first.communicate()

    assert first.returncode == 1, stderr[-3000:]
    summary = stderr[stderr.index(f"sweep {sweep}: ") :]
    assert "stopped early: cannot write " in summary and "No space left on device" in summary
    assert "not run" in summary and "to finish it: run the same command again" in summary
    assert "Logging error" not in summary
    written = statuses(sweep)  # every record there is whole and readable
    assert list(written.values()).count("completed") >= 2 and len(written) < 6
    Ledger(sweep)  # readable; a line the disk cut is gone

    filler.unlink()
    again = run_main(*args, cwd=small_disk.parent)
    assert again.returncode == 0, again.stderr[-3000:]
    assert statuses(sweep) == dict.fromkeys(range(6), "completed")
    assert records.read_sweep_record(sweep).stop_reason is None
