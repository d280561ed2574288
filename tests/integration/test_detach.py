"""Detached sweeps as a user runs them: ``python main.py -m ... hydra.sweeper.detach=true`` returns at once and its
controller finishes the sweep on its own; ``explaunch status`` reads it, ``explaunch cancel`` stops it (a rerun
finishes it), ``explaunch attach`` follows it and takes it over from a controller killed with ``kill -9``."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from explaunch.sweepdir import records
from tests.faults.helpers import job_runs
from tests.integration.helpers import run_main

pytestmark = pytest.mark.slow
EXPLAUNCH = (sys.executable, "-m", "explaunch")
PROBE = ("experiment_type=probe", "hydra.launcher.n_jobs=2")  # the default launcher: local workers
SECRET = f"sekrit-{uuid.uuid4().hex}"  # made at run time: a literal would sit in git.patch of a dirty checkout


def explaunch(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    return subprocess.run(
        [*EXPLAUNCH, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def status_of(sweep: Path) -> dict[str, Any]:
    proc = explaunch("status", str(sweep), "--json", cwd=sweep.parent)
    assert proc.returncode == 0, proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def controller_of(sweep: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((sweep / "controller.json").read_text())
    return data


def statuses(sweep: Path) -> dict[int | None, str]:
    return {r.job_num: r.status for _, r in records.iter_job_records(sweep)}


def wait_for(condition: Any, what: str, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"{what}: never happened")
        time.sleep(0.2)


def running(sweep: Path, *nums: int) -> bool:
    """The probe task itself has begun in each of these jobs."""
    return all((sweep / str(n) / "probe_attempts").exists() for n in nums)


def detach(*args: str, cwd: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.monotonic()
    proc = run_main("-m", *args, "hydra.sweeper.detach=true", cwd=cwd, timeout=120)
    return proc, time.monotonic() - start


def completed_lines(sweep: Path) -> Counter[int]:
    """How many ledger lines say each job completed (a job run twice would have two)."""
    lines = [json.loads(line) for line in (sweep / "ledger.jsonl").read_text().splitlines()]
    return Counter(line["job_num"] for line in lines if line["status"] == records.COMPLETED)


def test_a_detached_sweep_returns_at_once_and_its_controller_finishes_it(tmp_path: Path) -> None:
    """4 jobs of 3 s: the command returns in well under their time, naming the folder and the commands; attach
    follows the sweep to its end; status shows every job completed and the controller finished; the secret given
    on the command line is in none of the files the detach wrote. Its dashboard, asked for, is not served by the
    controller, whose output goes to controller.log (its token would be written there): the detach says how to
    serve it, and no dashboard token is in any file of the sweep."""
    sweep = tmp_path / "sweep"
    proc, took = detach(
        *PROBE, "experiment_type.duration_s=3", "seed=range(4)", "tracking=none", f"+params.api_token={SECRET}",
        "hydra.sweeper.dashboard=true", f"hydra.sweep.dir={sweep}", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert took < 8, took
    commands = ("status", "attach", "cancel", "dashboard")
    for line in (f"explaunch {command} {sweep}" for command in commands):
        assert line in proc.stdout, proc.stdout
    controller = controller_of(sweep)
    assert controller["launcher"] in ("explaunch_local", "joblib") and controller["slurm_job_id"] is None
    assert isinstance(controller["pid"], int) and controller["host"]
    assert "hydra.sweeper.detach=false" in controller["command"]
    assert "+params.api_token=<redacted>" in controller["command"]

    attach = explaunch("attach", str(sweep), cwd=tmp_path, timeout=180)
    assert attach.returncode == 0, attach.stdout + attach.stderr
    assert "completed    4" in attach.stdout and "controller: finished" in attach.stdout, attach.stdout
    assert statuses(sweep) == dict.fromkeys(range(4), records.COMPLETED)
    status = status_of(sweep)
    assert status["controller"]["state"] == "finished" and status["controller"]["exit_code"] == 0
    assert status["counts"]["completed"] == 4 and status["total"] == 4
    table = explaunch("status", str(sweep), cwd=tmp_path)
    assert "completed    4" in table.stdout and "controller: finished" in table.stdout, table.stdout
    for name in ("controller.json", "controller.log", "plan.json", "ledger.jsonl"):
        assert SECRET not in (sweep / name).read_text(), name
    log = (sweep / "controller.log").read_text()
    assert "dashboard: not started here (this output is not a terminal" in log and "http://" not in log, log
    token = re.compile(rb"\?token=[\w-]{32}")  # a dashboard's URL (server.new_token: 32 characters)
    assert [p for p in sweep.rglob("*") if p.is_file() and token.search(p.read_bytes())] == []


def test_cancel_stops_a_detached_sweep_and_a_rerun_finishes_it_each_job_once(tmp_path: Path) -> None:
    """6 jobs of 8 s on 2 workers, cancelled while the first two run: they end at once, recorded cancelled (with
    their MLflow runs), the other four never start; status says cancelled. The same command run again finishes
    the sweep: every job completed once, one completed MLflow run each."""
    sweep = tmp_path / "sweep"
    args = (*PROBE, "experiment_type.duration_s=8", "seed=range(6)", f"hydra.sweep.dir={sweep}")
    proc, _ = detach(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    wait_for(lambda: running(sweep, 0, 1), "jobs 0 and 1 running")
    start = time.monotonic()
    cancel = explaunch("cancel", str(sweep), cwd=tmp_path)
    assert cancel.returncode == 0, cancel.stdout + cancel.stderr
    assert time.monotonic() - start < 60  # the jobs are cut at once; then the sweep's relay logs their runs
    assert statuses(sweep) == {0: records.CANCELLED, 1: records.CANCELLED}
    assert all(r.duration_s < 8 for _, r in records.iter_job_records(sweep))  # cut, not run to their end
    assert not (sweep / "2" / "probe_attempts").exists()
    status = status_of(sweep)
    assert status["controller"]["state"] == "cancelled" and not status["controller"]["live"]
    assert status["counts"]["cancelled"] == 6 and status["counts"]["completed"] == 0  # 2 cut, 4 never started
    error = records.read_job_record(sweep / "0").error
    assert error is not None and error.type == "JobCancelled"
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert sorted(r.data.tags["status"] for r in job_runs(store)) == ["CANCELLED", "CANCELLED"]

    again = run_main("-m", *args, cwd=tmp_path, timeout=300)  # the same command, not detached
    assert again.returncode == 0, again.stderr[-3000:]
    assert not (sweep / ".cancel").exists()
    assert statuses(sweep) == dict.fromkeys(range(6), records.COMPLETED)
    assert completed_lines(sweep) == dict.fromkeys(range(6), 1)
    completed = [r for r in job_runs(store) if r.data.tags["status"] == "COMPLETED"]
    assert sorted(r.data.tags["job_num"] for r in completed) == [str(n) for n in range(6)]
    assert status_of(sweep)["controller"]["state"] == "finished"


def test_attach_takes_over_from_a_killed_controller_and_runs_every_job_once(tmp_path: Path) -> None:
    """The controller of 6 jobs of 4 s is killed with SIGKILL while two jobs run: status says it is gone; attach
    lets those two finish and record themselves, then resumes the sweep here: every job completed, each ran once."""
    sweep = tmp_path / "sweep"
    proc, _ = detach(
        *PROBE, "experiment_type.duration_s=4", "seed=range(6)", "tracking=none", f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    wait_for(lambda: running(sweep, 0, 1), "jobs 0 and 1 running")
    os.kill(controller_of(sweep)["pid"], signal.SIGKILL)
    wait_for(lambda: status_of(sweep)["controller"]["state"] == "gone", "controller seen gone", timeout=30)

    attach = explaunch("attach", str(sweep), cwd=tmp_path, timeout=300)
    assert attach.returncode == 0, attach.stdout[-3000:] + attach.stderr[-3000:]
    assert "taking the sweep over" in attach.stdout, attach.stdout
    assert statuses(sweep) == dict.fromkeys(range(6), records.COMPLETED)
    assert [(sweep / str(n) / "probe_attempts").read_text().strip() for n in range(6)] == ["1"] * 6  # once each
    assert completed_lines(sweep) == dict.fromkeys(range(6), 1)
    status = status_of(sweep)
    assert status["controller"]["state"] == "finished" and status["counts"]["completed"] == 6


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    return lines[0]


@pytest.mark.parametrize("command", ["status", "attach", "cancel"])
def test_a_folder_that_is_not_a_sweep_is_one_line_exit_2(tmp_path: Path, command: str) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("nothing here\n")
    for folder in (tmp_path / "notes", tmp_path / "missing"):
        proc = explaunch(command, str(folder), cwd=tmp_path)
        assert proc.returncode == 2
        assert str(folder) in one_error_line(proc)


def test_detach_refuses_what_it_cannot_run_in_one_line_exit_2_starting_nothing(tmp_path: Path) -> None:
    """A launcher explaunch cannot start a controller for, and a job whose config is bad: one line, exit 2, no
    folder, no controller."""
    sweep = tmp_path / "sweep"
    foreign = "hydra.launcher._target_=my_app.launchers.ClusterLauncher"  # another app's own launcher
    proc, _ = detach(*PROBE, "seed=0,1", "tracking=none", foreign, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert proc.returncode == 2
    assert "hydra.sweeper.detach" in one_error_line(proc) and "ClusterLauncher" in proc.stderr
    assert not sweep.exists()
    proc, _ = detach(*PROBE, "experiment_type.duration_s=1,-1", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert proc.returncode == 2
    assert "duration_s" in one_error_line(proc)
    assert not (sweep / "controller.json").exists()


def test_attach_will_not_rerun_a_command_whose_secret_was_redacted(tmp_path: Path) -> None:
    """A secret given literally is never written down, so a gone controller's command cannot be run again as it
    was: attach says so in one line instead of running it with ``<redacted>``."""
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "plan.json").write_text(json.dumps({"started": time.time(), "pid": 1, "host": "x", "jobs": []}))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    controller = {
        "pid": int(dead.stdout), "host": socket.gethostname(), "started": "2026-01-01T00:00:00+00:00",
        "command": [sys.executable, "main.py", "-m", "+params.api_token=<redacted>"], "cwd": str(tmp_path),
        "launcher": "explaunch_local", "state": "running",
    }  # fmt: skip
    (sweep / "controller.json").write_text(json.dumps(controller))
    assert status_of(sweep)["controller"]["state"] == "gone"
    proc = explaunch("attach", str(sweep), cwd=tmp_path)
    assert proc.returncode == 1
    assert "secret" in one_error_line(proc)
