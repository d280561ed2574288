"""Energy from a RAPL-style counter in a real sweep: jobs side by side on one machine are each charged their share.

This machine has no RAPL, so the test gives the jobs a powercap tree of its own (``energy.powercap_root``: the
kernel's sysfs files are the true edge) whose package counter a thread advances as a machine drawing a constant
power would, wrapping around as the kernel's does.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from explaunch.sweepdir import records
from tests.integration.helpers import run_main

pytestmark = pytest.mark.slow

PACKAGE_W = 40.0
DRAM_W = 4.0
MAX_RANGE_UJ = 60_000_000  # the counter wraps every 60 J, i.e. every 1.5 s at 40 W: several wraps per job


class FakeRapl:
    """``<root>/intel-rapl:0`` (package-0) and ``<root>/intel-rapl:0:0`` (its dram), counters advanced every 20 ms."""

    def __init__(self, root: Path) -> None:
        self.package = root / "intel-rapl:0"
        self.dram = root / "intel-rapl:0:0"  # sysfs lists subzones beside their package, as links
        for zone, name in ((self.package, "package-0"), (self.dram, "dram")):
            zone.mkdir(parents=True)
            (zone / "name").write_text(name + "\n")
            (zone / "max_energy_range_uj").write_text(f"{MAX_RANGE_UJ}\n")
        self.total_uj = {"package": 0.0, "dram": 0.0}  # never wrapped: what the machine drew
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._advance(0.0)

    def _advance(self, seconds: float) -> None:
        for key, zone, watts in (("package", self.package, PACKAGE_W), ("dram", self.dram, DRAM_W)):
            self.total_uj[key] += watts * seconds * 1e6
            tmp = zone / "energy_uj.tmp"
            tmp.write_text(f"{int(self.total_uj[key]) % (MAX_RANGE_UJ + 1)}\n")
            tmp.replace(zone / "energy_uj")  # a reader never sees half a number

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(0.02):
            now = time.monotonic()
            self._advance(now - last)
            last = now

    def __enter__(self) -> FakeRapl:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_parallel_jobs_apportioned_cpu_energy_adds_up_to_at_most_the_machines(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    with FakeRapl(tmp_path / "powercap") as rapl:
        before = dict(rapl.total_uj)
        result = run_main(
            "-m",
            "experiment_type=fairness_tradeoff",
            "seed=0,1,2,3",
            "hydra.launcher.n_jobs=2",
            "tracking=none",
            f"energy.powercap_root={tmp_path / 'powercap'}",
            "energy.min_window_s=2",
            "energy.min_iterations=1",
            f"hydra.sweep.dir={sweep}",
            cwd=tmp_path,
        )
        machine_j = (rapl.total_uj["package"] - before["package"]) / 1e6
    assert result.returncode == 0, result.stderr[-3000:]
    found = list(records.iter_job_records(sweep))
    assert len(found) == 4 and all(r.status == records.COMPLETED for _, r in found)
    windows, jobs = [], []
    for _, record in found:
        window_cpu = record.info["energy"]["components"]["cpu"]
        job_cpu = record.energy["components"]["cpu"]
        for cpu in (window_cpu, job_cpu):
            assert (cpu["source"], cpu["scope"]) == ("counter", "apportioned"), json.dumps(cpu)
            assert 0 < cpu["share"] <= 1 and cpu["machine_joules"] > 0
            assert cpu["joules"] == pytest.approx(cpu["machine_joules"] * cpu["share"])
        # the window's machine figure is the counter's increase over it, wraps included (~40 W x window)
        assert window_cpu["machine_joules"] == pytest.approx(PACKAGE_W * record.info["energy"]["window_s"], rel=0.1)
        assert record.info["energy"]["components"]["ram"]["scope"] == "apportioned"
        assert record.metrics["energy_cpu_joules"] == pytest.approx(window_cpu["joules"])
        windows.append(window_cpu["joules"])
        jobs.append(job_cpu["joules"])
    assert sum(jobs) <= machine_j, (jobs, machine_j)
    assert sum(windows) <= sum(jobs)
