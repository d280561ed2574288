"""A real single-node SLURM cluster for the tests, brought up by the project's own script and down afterwards."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT

SCRIPTS = ROOT / "scripts" / "slurm"
PIDS = ROOT / ".slurm" / "pids"


def recorded_pids() -> dict[str, int]:
    if not PIDS.exists():
        return {}
    return {name: int(pid) for name, pid in (line.split() for line in PIDS.read_text().splitlines() if line.strip())}


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[None]:
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("the SLURM tests need root to start the cluster, and CI must run them")
        pytest.skip("the SLURM tests start a cluster with scripts/slurm/up.sh, which needs root")
    already_up = bool(recorded_pids()) and all(alive(p) for p in recorded_pids().values())
    up = subprocess.run([str(SCRIPTS / "up.sh")], capture_output=True, text=True, timeout=600)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        yield
    finally:
        if not already_up:  # leave a cluster the developer started running
            subprocess.run([str(SCRIPTS / "down.sh")], capture_output=True, text=True, timeout=120)
