"""GPU energy from NVML's total-energy counter (Volta and newer): a meter, not a model.

The counter is per device, in millijoules since the driver loaded. A job's energy is the difference over the job on
the devices it may use (``CUDA_VISIBLE_DEVICES``, else all). Jobs that share a device are not split: the record says
``attribution: whole device``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any


@dataclass
class GpuEnergy:
    joules: float = 0.0
    per_device_joules: dict[str, float] = field(default_factory=dict)
    source: str = "measured"
    method: str = "NVML nvmlDeviceGetTotalEnergyConsumption difference"
    attribution: str = "whole device"

    def to_dict(self) -> dict[str, Any]:
        return {
            "joules": self.joules,
            "per_device_joules": self.per_device_joules,
            "source": self.source,
            "method": self.method,
            "attribution": self.attribution,
        }


def _visible(nvml: Any) -> list[Any]:
    count = nvml.nvmlDeviceGetCount()
    wanted = os.environ.get("CUDA_VISIBLE_DEVICES")
    if wanted is None:
        return [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
    handles = []
    for item in (w.strip() for w in wanted.split(",") if w.strip()):
        if item.isdigit() and int(item) < count:
            handles.append(nvml.nvmlDeviceGetHandleByIndex(int(item)))
        elif item.startswith(("GPU-", "MIG-")):
            handles.append(nvml.nvmlDeviceGetHandleByUUID(item))
    return handles


class GpuEnergyMeter:
    """``start()`` then ``stop() -> GpuEnergy | None``; None where there is no NVIDIA GPU or no energy counter."""

    def __init__(self) -> None:
        self._nvml: Any = None
        self._start: dict[str, int] = {}
        self._handles: dict[str, Any] = {}
        self.unavailable: str | None = None

    def start(self) -> GpuEnergyMeter:
        try:
            import pynvml

            pynvml.nvmlInit()
        except Exception as ex:
            self.unavailable = f"no NVML: {type(ex).__name__}"
            return self
        self._nvml = pynvml
        try:
            for handle in _visible(pynvml):
                uuid = pynvml.nvmlDeviceGetUUID(handle)
                self._start[uuid] = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
                self._handles[uuid] = handle
        except pynvml.NVMLError as ex:
            self.unavailable = f"energy counter not supported: {ex}"
            self._start.clear()
        return self

    def stop(self) -> GpuEnergy | None:
        if self._nvml is None:
            return None
        try:
            if not self._start:
                if self.unavailable is None:
                    self.unavailable = "no visible GPU"
                return None
            reading = GpuEnergy()
            for uuid, handle in self._handles.items():
                joules = (self._nvml.nvmlDeviceGetTotalEnergyConsumption(handle) - self._start[uuid]) / 1000.0
                reading.per_device_joules[uuid] = joules
                reading.joules += joules
            return reading
        finally:
            self._nvml.nvmlShutdown()
