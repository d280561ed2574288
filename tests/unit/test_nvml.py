"""GPU paths with a stand-in for NVML: the one true edge, since CI has no GPU. The stand-in follows nvidia-ml-py's
API (counters in millijoules, power in milliwatts, NVMLError on unsupported queries)."""

from __future__ import annotations

import sys
import time
import types
from pathlib import Path

import pytest

from explaunch.measure.nvml import GpuEnergyMeter
from explaunch.measure.resources import AlertThresholds, ResourceSampler


class FakeNvml(types.ModuleType):
    NVML_TEMPERATURE_GPU = 0

    class NVMLError(Exception):
        pass

    def __init__(self, gpus: int = 2, energy_supported: bool = True) -> None:
        super().__init__("pynvml")
        self.gpus = gpus
        self.energy_supported = energy_supported
        self.energy_mj = [1_000_000 * (i + 1) for i in range(gpus)]
        self.shutdowns = 0

    def nvmlInit(self) -> None:
        pass

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:
        return self.gpus

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> int:
        return int(uuid.removeprefix("GPU-fake-"))

    def nvmlDeviceGetUUID(self, handle: int) -> str:
        return f"GPU-fake-{handle}"

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: int) -> int:
        if not self.energy_supported:
            raise self.NVMLError("Not Supported")
        return self.energy_mj[handle]

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> types.SimpleNamespace:
        return types.SimpleNamespace(used=79 * 2**30, total=80 * 2**30)

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> types.SimpleNamespace:
        return types.SimpleNamespace(gpu=97)

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        return 350_000

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
        return 71


@pytest.fixture
def nvml(monkeypatch: pytest.MonkeyPatch) -> FakeNvml:
    fake = FakeNvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return fake


def test_job_gpu_energy_is_the_counter_difference_on_visible_devices(
    nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    meter = GpuEnergyMeter().start()
    nvml.energy_mj[0] += 999_000  # another job's GPU: not ours
    nvml.energy_mj[1] += 2_500  # 2.5 J on ours
    reading = meter.stop()
    assert reading is not None
    assert reading.joules == pytest.approx(2.5)
    assert reading.per_device_joules == {"GPU-fake-1": pytest.approx(2.5)}
    assert reading.source == "measured" and reading.attribution == "whole device"
    assert nvml.shutdowns == 1


def test_visible_devices_given_as_uuids(nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-fake-0,GPU-fake-1")
    meter = GpuEnergyMeter().start()
    nvml.energy_mj[0] += 1_000
    nvml.energy_mj[1] += 3_000
    reading = meter.stop()
    assert reading is not None and reading.joules == pytest.approx(4.0)


def test_gpu_without_an_energy_counter_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(energy_supported=False))
    meter = GpuEnergyMeter().start()
    assert meter.stop() is None
    assert meter.unavailable is not None and "not supported" in meter.unavailable


def test_sampler_records_gpu_columns_and_raises_a_gpu_memory_alert(nvml: FakeNvml, tmp_path: Path) -> None:
    limits = AlertThresholds(memory_percent=None, gpu_memory_percent=95.0, disk_free_gb=None)
    sampler = ResourceSampler(tmp_path / "r.csv", interval_s=0.05, thresholds=limits).start()
    time.sleep(0.2)
    summary = sampler.stop()
    header = (tmp_path / "r.csv").read_text().splitlines()[0].split(",")
    assert {"gpu0_util_percent", "gpu1_memory_mb", "gpu0_power_w", "gpu1_temperature_c"} <= set(header)
    assert summary.peak["gpu0_power_w"] == 350.0
    assert sorted(a.split()[0] for a in summary.alerts) == ["gpu0_memory_percent", "gpu1_memory_percent"]
