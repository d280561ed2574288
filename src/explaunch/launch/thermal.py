"""GPU temperatures at job starts: ``hydra.sweeper.temperature_warn_c`` (default 5).

A GPU that is much warmer (or cooler) when a job starts than when the sweep's first job started may clock
differently: the job's timings and energy are not comparable with the first's. The sweep warns; it does not wait
(``hydra.sweeper.cooldown_s`` is the wait).

How the sweeper uses it (local launches only: a SLURM job starts on another machine)::

    first = thermal.gpu_temperatures()              # when the first job starts; None: no GPU, nothing to do
    ...
    if first is not None:                           # before each later job starts
        now = thermal.gpu_temperatures()
        warning = thermal.temperature_warning(first, now or {}, settings.temperature_warn_c)
        if warning is not None:
            log.warning("job %d: %s", job.num, warning)
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any


def gpu_temperatures(nvml: Any = None) -> dict[int, float] | None:
    """``{NVML index: degrees C}`` of every GPU that could be read; None without NVML (no driver, no
    ``pynvml``) or GPU. ``nvml``: the ``pynvml`` module (a fake in tests). Never raises."""
    try:
        if nvml is None:
            import pynvml

            nvml = pynvml
        nvml.nvmlInit()
    except Exception:
        return None
    try:
        temperatures: dict[int, float] = {}
        for index in range(int(nvml.nvmlDeviceGetCount())):
            with contextlib.suppress(Exception):  # one GPU that cannot be read (lost, MIG) leaves the others
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                temperatures[index] = float(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU))
        return temperatures or None
    except Exception:
        return None
    finally:
        with contextlib.suppress(Exception):
            nvml.nvmlShutdown()


def temperature_warning(first: Mapping[int, float], now: Mapping[int, float], max_delta: float) -> str | None:
    """One line naming each GPU (read both times) now at least ``max_delta`` degrees C away from its temperature at
    the sweep's first job, or None: ``GPU 0 at 81 C, 12 C warmer than at the first job (69 C)``."""
    parts = []
    for index in sorted(set(first) & set(now)):
        delta = now[index] - first[index]
        if delta != 0 and abs(delta) >= max_delta:
            side = "warmer" if delta > 0 else "cooler"
            parts.append(
                f"GPU {index} at {now[index]:.0f} C, {abs(delta):.0f} C {side} than at the first job "
                f"({first[index]:.0f} C)"
            )
    if not parts:
        return None
    return "; ".join(parts) + " (its timings and energy may not compare with the first job's)"
