"""SLURM's own accounting (slurmdbd, started by scripts/slurm/up.sh): the states SLURM gives a job that left no record
(TIMEOUT, OUT_OF_MEMORY, CANCELLED) reach the job records, and the real ``sacct`` shows them."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from explaunch.sweepdir import records
from tests.conftest import MAIN
from tests.integration.helpers import run_main

pytestmark = [pytest.mark.slow, pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]
PROBE = ("experiment_type=probe", "tracking=none", "hydra/launcher=submitit_slurm")


def slurm_ids(sweep_dir: Path) -> list[str]:
    """The SLURM job ids of a sweep (``<array>_<task>``): submitit's folders under ``.submitit``."""
    names = [p.name for p in (sweep_dir / ".submitit").iterdir() if p.is_dir() and p.name[0].isdigit()]
    return sorted(names, key=lambda name: [int(part) for part in name.split("_") if part.isdigit()])


def sacct_states(ids: list[str]) -> dict[str, str]:
    """``sacct``'s state of each job and of its steps (``22.0``; ``CANCELLED by 0`` read as ``CANCELLED``), asked
    again while a job's row is missing or not final: the accounting may lag a job's end by a moment."""
    found: dict[str, str] = {}
    for _ in range(20):
        out = subprocess.run(
            ["sacct", "-n", "-P", "-o", "JobID,State", "-j", ",".join(ids)], capture_output=True, text=True
        )
        found = {j: s.split(" ")[0] for j, _, s in (line.partition("|") for line in out.stdout.splitlines())}
        if all(found.get(i) not in (None, "RUNNING", "PENDING", "COMPLETING") for i in ids):
            break
        time.sleep(0.5)
    return found


def test_sacct_is_slurms_own() -> None:
    standin = Path("/usr/local/bin/sacct")
    assert not (standin.exists() and "explaunch sacct stand-in" in standin.read_text(errors="replace"))
    version = subprocess.run(["sacct", "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("slurm"), version.stdout + version.stderr  # slurm-wlm


@dataclass(frozen=True)
class Outcome:
    returncode: int
    stderr: str
    sweep: Path
    cancelled_id: str
    sacct: dict[str, str]


@pytest.fixture(scope="module")
def timeout_and_cancel(tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    """One sweep of three jobs (6 s, 8 s, 600 s): the 8 s one is cancelled (scancel of its array task) while it runs,
    the 600 s one runs past its one-minute limit (SLURM checks every 30 s: it ends 1-1.5 min after it began). No
    warning signal (``signal_delay_s=0``): with one, submitit's handler ends the job itself (a record of its own,
    ``COMPLETED`` in sacct); without, SLURM kills it at the limit (``TIMEOUT``) and the sweep writes its record."""
    cwd = tmp_path_factory.mktemp("timeout_and_cancel")
    sweep = cwd / "sweep"
    args = ["-m", "experiment_type.duration_s=6,8,600", *PROBE, "hydra.launcher.timeout_min=1",
            "hydra.launcher.signal_delay_s=0", f"hydra.sweep.dir={sweep}"]  # fmt: skip
    with (cwd / "out.txt").open("w") as out, (cwd / "err.txt").open("w") as err:
        proc = subprocess.Popen([sys.executable, str(MAIN), *args], cwd=cwd, stdout=out, stderr=err,
                                stdin=subprocess.DEVNULL)  # fmt: skip
        cancelled = ""
        try:
            for _ in range(600):  # job 1 (array task 1) runs
                if (sweep / "1" / "probe_attempts").exists():
                    running = subprocess.run(["squeue", "-h", "-t", "RUNNING", "-o", "%i"], capture_output=True,
                                             text=True).stdout.split()  # fmt: skip
                    cancelled = next((i for i in running if i.endswith("_1") and i in slurm_ids(sweep)), "")
                    if cancelled:
                        break
                time.sleep(0.2)
            assert cancelled, "job 1 never ran"
            subprocess.run(["scancel", cancelled], check=True)
            proc.wait(timeout=300)
        finally:
            if proc.poll() is None:  # the test failed: nothing of it keeps running (the 600 s job least of all)
                proc.kill()
                arrays = {i.partition("_")[0] for i in slurm_ids(sweep)} if (sweep / ".submitit").exists() else set()
                subprocess.run(["scancel", *arrays], capture_output=True)
    return Outcome(proc.returncode, (cwd / "err.txt").read_text(), sweep, cancelled, sacct_states(slurm_ids(sweep)))


def test_a_job_past_its_time_limit_is_timeout_in_its_record_and_in_sacct(timeout_and_cancel: Outcome) -> None:
    outcome = timeout_and_cancel
    assert outcome.returncode == 1, outcome.stderr[-3000:]
    record = records.read_job_record(outcome.sweep / "2")
    assert record.status == records.TIMEOUT and record.error is not None and record.error.type == "JobTimeout"
    assert "time limit" in record.error.message and record.info["recorded_by"].startswith("sweep parent")
    timed_out = outcome.cancelled_id.rpartition("_")[0] + "_2"
    assert outcome.sacct[timed_out] == "TIMEOUT", outcome.sacct
    assert records.read_job_record(outcome.sweep / "0").status == records.COMPLETED
    assert outcome.sacct[outcome.cancelled_id.rpartition("_")[0] + "_0"] == "COMPLETED"


def test_a_job_cancelled_while_it_runs_is_cancelled_and_the_others_complete(timeout_and_cancel: Outcome) -> None:
    outcome = timeout_and_cancel
    record = records.read_job_record(outcome.sweep / "1")
    assert record.status == records.CANCELLED, record.error
    assert record.error is not None and record.error.type == "JobCancelled" and "CANCELLED" in record.error.message
    assert outcome.sacct[outcome.cancelled_id] == "CANCELLED", outcome.sacct
    assert "cancelled" in outcome.stderr  # the summary names it
    assert record.attempts == []  # a job someone cancelled is not retried


def test_a_job_over_its_memory_limit_is_out_of_memory_and_retried_with_half_the_batch(tmp_path: Path) -> None:
    """The first attempt (batch 16) fills 1.5 GiB in a job of ``mem_gb=1``: SLURM's cgroup ends its step
    OUT_OF_MEMORY (submitit runs the job as an srun step; the job then ends FAILED) and the sweeper treats it as an
    OOM (``oom_fallback``): the second attempt at batch 8 fills nothing and completes."""
    sweep = tmp_path / "sweep"
    proc = run_main(
        "-m", *PROBE, "batch=16", "experiment_type.allocate_mb=1536", "experiment_type.oom_above_batch=8",
        "hydra.launcher.mem_gb=1", f"hydra.sweep.dir={sweep}", cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = records.read_job_record(sweep / "0")
    assert record.status == records.COMPLETED and record.metrics["batch_size"] == 8
    [first] = record.attempts
    assert first["status"] == records.FAILED and first["error_type"] == "OutOfMemoryError", first
    assert "out of memory" in first["error"]
    ids = slurm_ids(sweep)
    assert len(ids) == 2  # two sbatch: the OOM and the retry
    states = sacct_states(ids)
    assert states[f"{ids[0]}.0"] == "OUT_OF_MEMORY" and states[ids[0]] == "FAILED", states
    assert states[ids[1]] == "COMPLETED", states
