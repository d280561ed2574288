"""The job's GPUs through NVML: which devices are its own (:func:`select_gpus`), and their energy over a window.

NVML's total-energy counter (Volta and newer) integrates power in hardware: a window's energy is its last read less
its first. A GPU without one only gives power, which is integrated over the reads. A MIG partition has no reading of
its own: its parent GPU is read, and labelled as a whole device others share. Used by
:class:`explaunch.measure.counters.WindowMeter`; pynvml is imported only when no NVML object is given.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from explaunch.measure.energy import ComponentEnergy

_MIG_NOTE = "{}: a MIG partition has no energy reading of its own; this is its whole parent GPU, shared by others"
_GPU_COUNTER = "NVML nvmlDeviceGetTotalEnergyConsumption (mJ), last - first per device"
_GPU_POWER = "NVML nvmlDeviceGetPowerUsage (mW) at every read, trapezoid rule over the clock"


def select_gpus(nvml: Any, visible: str | None, gpu_ids: Sequence[int]) -> list[str]:
    """The NVML device UUIDs a job was given, without repeats.

    ``visible`` is CUDA_VISIBLE_DEVICES (None: all devices in NVML index order); entries are indices, GPU- UUIDs (or
    unique prefixes) or MIG- UUIDs. As CUDA does, the list ends at the first entry that names no device. Indices are
    NVML's (PCI bus) order, which is CUDA's only with CUDA_DEVICE_ORDER=PCI_BUS_ID. ``gpu_ids`` are CUDA ordinals
    into the visible list (empty: all of it).
    """
    every = [_uuid(nvml, nvml.nvmlDeviceGetHandleByIndex(i)) for i in range(nvml.nvmlDeviceGetCount())]
    listed = every if visible is None else _parse_visible(visible, every)
    for gpu_id in gpu_ids:
        if not 0 <= gpu_id < len(listed):
            raise ValueError(
                f"GPU id {gpu_id} is not visible: CUDA_VISIBLE_DEVICES={visible!r} leaves {len(listed)} device(s)"
            )
    return list(dict.fromkeys([listed[i] for i in gpu_ids] if gpu_ids else listed))


def _parse_visible(visible: str, every: list[str]) -> list[str]:
    listed: list[str] = []
    for entry in (e.strip() for e in visible.split(",")):
        matches = [u for u in every if u == entry] or [u for u in every if entry and u.startswith(entry)]
        if entry.isdigit() and int(entry) < len(every):
            listed.append(every[int(entry)])
        elif entry.startswith("MIG-"):
            listed.append(entry)
        elif entry.startswith("GPU-") and len(matches) == 1:
            listed.append(matches[0])
        else:
            break
    return listed


def _uuid(nvml: Any, handle: Any) -> str:
    uuid = nvml.nvmlDeviceGetUUID(handle)
    return uuid.decode() if isinstance(uuid, bytes) else str(uuid)


@dataclass
class _DeviceSeries:
    """One device's reads: the counter's first and last value, and the trapezoid integral of power."""

    first: float = 0.0
    last: float = 0.0
    last_t: float = 0.0
    integral: float = 0.0
    reads: int = 0

    def add(self, t: float, value: float) -> None:
        if self.reads:
            self.integral += (self.last + value) / 2 * (t - self.last_t)
        else:
            self.first = value
        self.last, self.last_t = value, t
        self.reads += 1


class GpuWindow:
    """The job's physical GPUs (a MIG partition read through its parent), by counter if all have one, else power."""

    def __init__(self, nvml: Any, uuids: Sequence[str], owned: bool) -> None:
        self.nvml, self.owned = nvml, owned
        self.errors: list[str] = []
        self.nvml_error: Any = getattr(nvml, "NVMLError", Exception)
        self.handles: dict[str, Any] = {}
        self.mig: list[str] = []
        for uuid in dict.fromkeys(uuids):
            handle = nvml.nvmlDeviceGetHandleByUUID(uuid)
            if self._is_mig(uuid, handle):
                handle = nvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(handle)
                self.mig.append(uuid)
            self.handles.setdefault(_uuid(nvml, handle), handle)
        self.counter = self._all_read(nvml.nvmlDeviceGetTotalEnergyConsumption)
        if not self.counter and not self._all_read(nvml.nvmlDeviceGetPowerUsage):
            raise LookupError("neither an energy counter nor a power reading on the job's GPUs")
        self.series = {uuid: _DeviceSeries() for uuid in self.handles}

    def _is_mig(self, uuid: str, handle: Any) -> bool:
        try:
            return uuid.startswith("MIG-") or bool(self.nvml.nvmlDeviceIsMigDeviceHandle(handle))
        except (AttributeError, self.nvml_error):
            return False

    def _all_read(self, query: Callable[[Any], int]) -> bool:
        try:
            for handle in self.handles.values():
                query(handle)
        except self.nvml_error:
            return False
        return True

    def read(self, t: float) -> None:
        query = self.nvml.nvmlDeviceGetTotalEnergyConsumption if self.counter else self.nvml.nvmlDeviceGetPowerUsage
        for uuid, handle in self.handles.items():
            try:
                self.series[uuid].add(t, float(query(handle)) / 1000)
            except self.nvml_error as ex:
                self.errors.append(f"{uuid}: {ex}")

    def result(self) -> ComponentEnergy | str:
        if any(s.reads < 2 for s in self.series.values()):
            return f"a GPU was read fewer than twice in the window: {'; '.join(self.errors[-3:])}"
        devices = {u: s.last - s.first if self.counter else s.integral for u, s in self.series.items()}
        notes = [_MIG_NOTE.format(", ".join(self.mig))] if self.mig else []
        notes += [f"{len(self.errors)} NVML read error(s), e.g. {self.errors[0]}"] if self.errors else []
        if not self.counter:
            notes.append("no total-energy counter on this GPU (NVML has one from Volta on): power sampled instead")
        reads = min(s.reads for s in self.series.values())
        source, method = ("counter", _GPU_COUNTER) if self.counter else ("sampled", _GPU_POWER)
        scope, note = "machine" if self.mig else "devices", "; ".join(notes)
        return ComponentEnergy(sum(devices.values()), source, scope, reads, devices=devices, method=method, note=note)

    def close(self) -> None:
        if self.owned:
            with contextlib.suppress(self.nvml_error):
                self.nvml.nvmlShutdown()


def open_gpus(nvml: Any | None, uuids: Sequence[str]) -> GpuWindow | str:
    if not uuids:
        return "no GPU given to the job"
    owned = nvml is None
    if nvml is None:
        try:
            import pynvml

            pynvml.nvmlInit()
            nvml = pynvml
        except Exception as ex:  # no library, no driver, no GPU: all mean the same here
            return f"no NVML: {type(ex).__name__}: {ex}"
    try:
        return GpuWindow(nvml, uuids, owned)
    except (LookupError, getattr(nvml, "NVMLError", LookupError)) as ex:
        if owned:
            with contextlib.suppress(Exception):
                nvml.nvmlShutdown()
        return f"NVML cannot read the job's GPUs: {type(ex).__name__}: {ex}"
