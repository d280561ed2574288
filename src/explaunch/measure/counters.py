"""Energy of a measurement window from hardware counters, every figure labelled with its source and scope.

Counters first: RAPL (CPU packages, DRAM: :mod:`explaunch.measure.rapl`) and NVML's total-energy counter (Volta and
newer: :mod:`explaunch.measure.gpus`) integrate power in hardware, so a window's energy is a difference of reads and
does not depend on how often we sample. We still read every ~0.2-1 s because (1) a RAPL package counter wraps every
~262 kJ, which two edge reads cannot see; (2) RAPL measures whole packages, so each interval's energy is split by the
job's share of the machine's busy CPU time in that interval, which keeps jobs running side by side from adding up to
more than the machine; (3) a GPU without an energy counter only gives power, which we integrate.

A component we cannot read is absent from the result, its reason in ``WindowMeter.unavailable``: never a made-up
figure. This module runs in a small sidecar process: psutil, and pynvml only when no NVML object is given.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any

from explaunch.measure.energy import ComponentEnergy
from explaunch.measure.gpus import GpuWindow, open_gpus
from explaunch.measure.gpus import select_gpus as select_gpus  # explaunch.launch.preflight imports it from here
from explaunch.measure.rapl import POWERCAP_ROOT, PROC_ROOT, RaplWindow, find_rapl_zones, zone_kind

_NO_DRAM = "no readable dram RAPL subzone (many desktop CPUs and AMD expose none)"


class WindowMeter:
    """Energy of one job over one window: ``start()``, ``sample()`` from a thread every ~0.2-1 s, ``stop()``.

    Setup (finding zones, NVML handles) happens here so that ``start()`` is only the first edge's reads. ``sample()``
    and ``stop()`` never raise for a vanished process, an unreadable file or an NVML error: the read is skipped.
    """

    def __init__(
        self,
        *,
        client_pid: int,
        exclude_pids: AbstractSet[int] = frozenset(),
        powercap_root: Path = POWERCAP_ROOT,
        proc_root: Path = PROC_ROOT,
        nvml: Any | None = None,
        gpu_uuids: Sequence[str] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.unavailable: dict[str, str] = {}
        self._clock = clock
        self._lock = threading.Lock()
        self._t0: float | None = None
        self._t1: float | None = None
        self._result: dict[str, ComponentEnergy] | None = None
        zones, reason = find_rapl_zones(powercap_root)
        self._rapl = RaplWindow(zones, client_pid, frozenset(exclude_pids), proc_root) if zones else None
        if reason is not None:
            self.unavailable["cpu"] = self.unavailable["ram"] = f"no RAPL: {reason}"
        elif not any(zone_kind(z) == "ram" for z in zones):
            self.unavailable["ram"] = _NO_DRAM
        gpu = open_gpus(nvml, gpu_uuids)
        self._gpu = gpu if isinstance(gpu, GpuWindow) else None
        if isinstance(gpu, str):
            self.unavailable["gpu"] = gpu

    @property
    def window_s(self) -> float:
        if self._t0 is None:
            return 0.0
        return (self._t1 if self._t1 is not None else self._clock()) - self._t0

    def start(self) -> None:
        with self._lock:
            if self._t0 is not None:
                raise RuntimeError("WindowMeter.start() called twice")
            self._t0 = self._read()

    def sample(self) -> None:
        with self._lock:
            if self._t0 is not None and self._t1 is None:
                self._read()

    def stop(self) -> dict[str, ComponentEnergy]:
        with self._lock:
            if self._t0 is None:
                raise RuntimeError("WindowMeter.stop() before start()")
            if self._result is None:
                self._t1 = self._read()
                self._result = self._collect()
            return dict(self._result)

    def _read(self) -> float:
        now = self._clock()
        if self._rapl is not None:
            self._rapl.read()
        if self._gpu is not None:
            self._gpu.read(now)
        return now

    def _collect(self) -> dict[str, ComponentEnergy]:
        result: dict[str, ComponentEnergy] = {}
        if self._rapl is not None:
            kinds = ["cpu"] + (["ram"] if "ram" not in self.unavailable else [])
            for kind in kinds:
                if self._rapl.reads >= 2:
                    result[kind] = self._rapl.result(kind)
                else:
                    self.unavailable[kind] = f"RAPL read fewer than twice in the window: {self._rapl.error}"
        if self._gpu is not None:
            gpu = self._gpu.result()
            self._gpu.close()
            if isinstance(gpu, str):
                self.unavailable["gpu"] = gpu
            else:
                result["gpu"] = gpu
        return result
