from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from explaunch.measure.energy import JOULES_PER_KWH, EnergyTracker


def busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    x = 0
    while time.perf_counter() < end:
        x += 1


def test_energy_of_a_busy_region_is_measured_or_labelled_estimated() -> None:
    with EnergyTracker(measure_power_secs=0.5) as tracker:
        busy(1.0)
    reading = tracker.reading
    assert reading is not None
    assert reading.duration_s == pytest.approx(1.0, abs=0.5)
    assert reading.energy_kwh > 0
    assert reading.energy_kwh == pytest.approx(reading.cpu_kwh + reading.gpu_kwh + reading.ram_kwh, rel=1e-6)
    assert reading.energy_joules == pytest.approx(reading.energy_kwh * JOULES_PER_KWH)
    assert set(reading.sources) == {"cpu", "gpu", "ram"}
    assert reading.sources["ram"] == "estimated"
    assert reading.sources["cpu"] in {"measured", "estimated"}
    assert "tracking_mode=process" in reading.method
    metrics = reading.metrics("energy")
    assert metrics["energy_joules"] == pytest.approx(reading.energy_joules)
    assert {"energy_kwh", "energy_cpu_kwh", "energy_gpu_kwh", "energy_ram_kwh", "energy_emissions_kg"} <= set(metrics)


def test_the_sidecar_measures_this_process_not_itself(tmp_path: Path) -> None:
    """codecarbon runs in the sidecar but its CPU meter follows this process: busy here means CPU power here."""
    with EnergyTracker(measure_power_secs=0.5) as idle:
        time.sleep(1.5)
    with EnergyTracker(measure_power_secs=0.5, csv_path=tmp_path / "emissions.csv") as working:
        busy(1.5)
    assert idle.reading is not None and working.reading is not None, (idle.error, working.error)
    if working.reading.sources["cpu"] == "estimated":  # from the process's CPU time: busy vs asleep is clear-cut
        assert working.reading.cpu_kwh > 3 * idle.reading.cpu_kwh, (working.reading, idle.reading)
    assert "sidecar" in working.reading.method
    assert (tmp_path / "emissions.csv").read_text().count("\n") >= 2  # codecarbon's own CSV, header + a row


def test_a_job_tracker_and_a_region_tracker_run_at_once() -> None:
    with EnergyTracker(measure_power_secs=0.5) as job:
        with EnergyTracker(measure_power_secs=0.5) as region:
            busy(0.5)
        busy(0.5)
    assert job.reading is not None and region.reading is not None
    assert job.reading.duration_s > region.reading.duration_s


def test_a_killed_meter_is_an_error_not_a_hang() -> None:
    from explaunch.measure import meter

    with EnergyTracker() as tracker:
        meter._process().kill()  # the stop goes to a new sidecar, which never ran this tracker
    assert tracker.reading is None and tracker.error is not None and "energy meter" in tracker.error


def test_the_sidecar_ends_with_its_process(tmp_path: Path) -> None:
    code = (
        "from explaunch.measure.energy import EnergyTracker\n"
        "from explaunch.measure import meter\n"
        "with EnergyTracker(): pass\n"
        "print(meter._process().pid, flush=True)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    sidecar = int(proc.stdout.split()[-1])
    for _ in range(100):
        if not psutil.pid_exists(sidecar) or psutil.Process(sidecar).status() == psutil.STATUS_ZOMBIE:
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"sidecar {sidecar} outlived its process")
