"""A detached sweep on a real SLURM cluster (scripts/slurm/up.sh): its controller is a SLURM job of its own; when
that job is cancelled mid-sweep, ``explaunch attach`` takes the sweep over and finishes it, every job run once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from explaunch.launch.controller_state import active_slurm_jobs, slurm_jobs_of
from explaunch.sweepdir import records
from tests.integration.helpers import run_main

pytestmark = [pytest.mark.slow, pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]
PROBE = ("experiment_type=probe", "tracking=none", "hydra/launcher=submitit_slurm")


def explaunch(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    return subprocess.run(
        [sys.executable, "-m", "explaunch", *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=timeout, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def status_of(sweep: Path) -> dict[str, Any]:
    proc = explaunch("status", str(sweep), "--json", cwd=sweep.parent)
    assert proc.returncode == 0, proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def wait_for(condition: Any, what: str, timeout: float = 180) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"{what}: never happened")
        time.sleep(0.5)


def in_queue(job_id: str) -> bool:
    queue = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True)
    return bool(queue.stdout.strip())


def test_a_detached_slurm_sweep_whose_controller_job_is_cancelled_is_finished_by_attach_each_job_once(
    tmp_path: Path,
) -> None:
    sweep = tmp_path / "sweep"
    start = time.monotonic()
    proc = run_main(
        "-m", "seed=range(4)", *PROBE, "experiment_type.duration_s=10", "hydra.sweeper.detach=true",
        f"hydra.sweep.dir={sweep}", cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert time.monotonic() - start < 30
    controller = json.loads((sweep / "controller.json").read_text())
    job_id = controller["slurm_job_id"]
    assert controller["launcher"] == "submitit_slurm" and job_id and job_id.isdigit()
    assert f"SLURM job {job_id}" in proc.stdout and f"explaunch attach {sweep}" in proc.stdout

    # the controller runs as its SLURM job and has a job of the sweep running: cancel the controller's job
    wait_for(lambda: (sweep / "0" / "probe_attempts").exists(), "job 0 running")
    assert status_of(sweep)["controller"]["state"] == "running"
    subprocess.run(["scancel", job_id], check=True)
    wait_for(lambda: not in_queue(job_id), "controller job gone from the queue", timeout=60)
    # SIGTERM first (it stops launching, says so in controller.json), SIGKILL after SLURM's KillWait: either way
    wait_for(lambda: status_of(sweep)["controller"]["state"] in ("interrupted", "gone"), "controller ended", 60)

    attach = explaunch("attach", str(sweep), cwd=tmp_path, timeout=600)
    assert attach.returncode == 0, attach.stdout[-3000:] + attach.stderr[-3000:]
    assert "taking the sweep over" in attach.stdout, attach.stdout
    found = {r.job_num: r.status for _, r in records.iter_job_records(sweep)}
    assert found == dict.fromkeys(range(4), records.COMPLETED)
    # each job completed once: one completed ledger line, one completed attempt (a job the controller's end cut
    # short ran again, its first attempt archived)
    lines = [json.loads(line) for line in (sweep / "ledger.jsonl").read_text().splitlines()]
    assert Counter(e["job_num"] for e in lines if e["status"] == "completed") == dict.fromkeys(range(4), 1)
    for n in range(4):
        earlier = records.read_job_record(sweep / str(n)).attempts
        assert records.COMPLETED not in [a["status"] for a in earlier], (n, earlier)
    status = status_of(sweep)
    assert status["controller"]["state"] == "finished" and status["counts"]["completed"] == 4


def test_cancel_of_a_detached_slurm_sweep_cancels_its_jobs_and_controller(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = run_main(
        "-m", "seed=range(4)", *PROBE, "experiment_type.duration_s=120", "hydra.sweeper.detach=true",
        f"hydra.sweep.dir={sweep}", cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    job_id = json.loads((sweep / "controller.json").read_text())["slurm_job_id"]
    wait_for(lambda: (sweep / "0" / "probe_attempts").exists(), "job 0 running")

    cancel = explaunch("cancel", str(sweep), "--wait", "90", cwd=tmp_path, timeout=200)
    assert cancel.returncode == 0, cancel.stdout + cancel.stderr
    assert not in_queue(job_id)
    found = {r.job_num: r.status for _, r in records.iter_job_records(sweep)}
    assert found.get(0) == records.CANCELLED and records.COMPLETED not in found.values()
    status = status_of(sweep)
    assert status["controller"]["state"] == "cancelled" and status["counts"]["completed"] == 0
    assert active_slurm_jobs(slurm_jobs_of(sweep)) == {}  # no job of the sweep left in the queue
