"""The resource sampler's GPU columns with a stand-in for NVML, the one true edge, since CI has no GPU (GPU energy:
tests/unit/test_counters.py). The stand-in follows nvidia-ml-py's API (power in milliwatts, NVMLError on unsupported
queries)."""

from __future__ import annotations

import sys
import time
import types
from pathlib import Path

import pytest

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


def test_sampler_records_gpu_columns_and_raises_a_gpu_memory_alert(nvml: FakeNvml, tmp_path: Path) -> None:
    limits = AlertThresholds(memory_percent=None, gpu_memory_percent=95.0, disk_free_gb=None)
    sampler = ResourceSampler(tmp_path / "r.csv", interval_s=0.05, thresholds=limits).start()
    time.sleep(0.2)
    summary = sampler.stop()
    header = (tmp_path / "r.csv").read_text().splitlines()[0].split(",")
    assert {"gpu0_util_percent", "gpu1_memory_mib", "gpu0_power_w", "gpu1_temperature_c"} <= set(header)
    assert summary.peak["gpu0_power_w"] == 350.0
    assert sorted(a.split()[0] for a in summary.alerts) == ["gpu0_memory_percent", "gpu1_memory_percent"]
