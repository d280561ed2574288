from __future__ import annotations

import pytest

from explaunch.measure.energy import JOULES_PER_KWH, EnergyTracker


def busy(seconds: float) -> None:
    import time

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
