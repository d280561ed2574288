"""What the fault tests share: sweeps started as a user starts them (their own session, as a terminal starts a
command, so that a Ctrl-C or a kill can reach the whole process group), waiting on the files they write, and small
real filesystems (tmpfs, mounted when root)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from explaunch.sweepdir import records
from tests.conftest import MAIN


def start_sweep(*args: str, cwd: Path) -> subprocess.Popen[str]:
    """``python main.py ARGS`` in the background, in a session of its own; MLflow's default store is ``cwd``'s."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(MLFLOW_DISABLE_TELEMETRY="true", HYDRA_FULL_ERROR="0")
    return subprocess.Popen(
        [sys.executable, str(MAIN), *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_until(condition: Callable[[], bool], what: str, proc: subprocess.Popen[str], timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None or time.monotonic() > end:
            _, err = proc.communicate()
            raise AssertionError(f"{what}: never happened (exit {proc.returncode})\n{err[-3000:]}")
        time.sleep(0.05)


def statuses(sweep_dir: Path) -> dict[int | None, str]:
    return {r.job_num: r.status for _, r in records.iter_job_records(sweep_dir)}


def has_run_id(job_dir: Path) -> bool:
    try:
        return bool(records.read_job_record(job_dir).tracking.get("run_id"))
    except Exception:
        return False


def job_runs(uri: str) -> list[Any]:
    """The job runs (those with a ``job_dir`` tag) of the store's ``explaunch`` experiment."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    found = client.get_experiment_by_name("explaunch")
    assert found is not None
    return [r for r in client.search_runs([found.experiment_id], max_results=1000) if "job_dir" in r.data.tags]


@contextlib.contextmanager
def tmpfs(where: Path, options: str) -> Iterator[Path]:
    """A small real filesystem mounted on ``where`` (created): one that really fills up, or is really read-only
    (root writes through file modes). Needs root; skipped with the reason otherwise."""
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("a real full or read-only filesystem needs root to mount a small tmpfs")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"root cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "--lazy", str(where)], check=True)


def fill(disk: Path) -> Path:
    """Write zeros until the filesystem is full; the file that holds them (delete it to free the space)."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as handle:
        with contextlib.suppress(OSError):
            while True:
                handle.write(b"\0" * 65536)
        with contextlib.suppress(OSError):
            while True:
                handle.write(b"\0" * 512)
    return filler
