"""Energy from a RAPL-style counter in real jobs: jobs side by side on one machine are each charged their share, and
a job with an idle baseline records its energy less the machine's idle power.

This machine has no RAPL, so the tests give the jobs a powercap tree of their own (``energy.powercap_root``: the
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


def test_a_job_with_an_idle_baseline_records_its_idle_power_and_adjusted_energy(tmp_path: Path) -> None:
    """``energy.baseline_s=1``: the job measures the host's idle power first (into its folder: a single run has no
    sweep folder), then records ``baseline_power_w`` and ``energy_adjusted_joules``. The fake machine draws a
    constant power, all of it idle power: what is left once the idle power is taken out is about nothing."""
    job_dir = tmp_path / "job"
    with FakeRapl(tmp_path / "powercap"):
        result = run_main(
            "experiment_type=probe",
            "experiment_type.duration_s=1",
            "tracking=none",
            f"energy.powercap_root={tmp_path / 'powercap'}",
            "energy.baseline_s=1",
            f"hydra.run.dir={job_dir}",
            cwd=tmp_path,
        )
    assert result.returncode == 0, result.stderr[-3000:]
    record = records.read_job_record(job_dir)
    assert record.status == records.COMPLETED and record.callback_errors == []
    (baseline_file,) = job_dir.glob("baseline-*.json")
    idle = json.loads(baseline_file.read_text())
    assert idle["power_w"]["cpu"] == pytest.approx(PACKAGE_W, rel=0.1)  # the machine's counters, whole
    assert idle["power_w"]["ram"] == pytest.approx(DRAM_W, rel=0.1)
    assert record.energy["baseline"] == idle
    components = record.energy["components"]
    shares = {name: components[name]["share"] or 0.0 for name in ("cpu", "ram")}
    watts = record.metrics["job_baseline_power_w"]
    assert watts == pytest.approx(sum(idle["power_w"][n] * shares[n] for n in shares))  # idle power at the job's share
    joules, window_s = record.metrics["job_energy_joules"], record.metrics["job_energy_window_s"]
    assert record.metrics["job_energy_adjusted_joules"] == pytest.approx(joules - watts * window_s)
    assert record.energy["adjusted"]["joules"] == record.metrics["job_energy_adjusted_joules"]
    assert sorted(record.energy["adjusted"]["components"]) == ["cpu", "ram"]
    assert abs(record.metrics["job_energy_adjusted_joules"]) <= 0.1 * joules
