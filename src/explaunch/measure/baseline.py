"""Idle power of a host and its GPUs, measured once per sweep, so that jobs of different lengths compare fairly.

A job's energy includes what the machine draws doing nothing (a GPU idles at 50-100 W): a job twice as long pays
that twice. With ``energy.baseline_s`` > 0 the first job on each host measures the idle power for that long, with
the same meters as the jobs, before anything of its own starts, and writes ``baseline-<host>.json`` in the sweep
folder; the other jobs of the host wait for that file (a lock file says who measures), so that none runs during the
measurement. Every job then records ``baseline_power_w`` and ``energy_adjusted_joules`` = energy - idle power x
window, component by component: a counter read at machine scope is taken at the job's share (the same share as its
energy), a device's at whole; a modelled component is left as it is (its model has no idle state to subtract).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from explaunch.sweepdir import records

WAIT_S = 600.0  # how long a job waits for another job's baseline before measuring its own
GPU_HOST_DEFAULT_S = 5.0  # ``baseline_s: null`` on a host with a GPU (ML.ENERGY: NVML readings settle in ~5 s)


def resolve_seconds(setting: float | None) -> float:
    """``energy.baseline_s``: as given, or (null) 5 s where NVML sees a GPU and off on CPU-only hosts, where the
    CPU figure is usually modelled and an idle baseline of a model means nothing."""
    if setting is not None:
        return float(setting)
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            count = int(pynvml.nvmlDeviceGetCount())
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no driver, no library
        return 0.0
    return GPU_HOST_DEFAULT_S if count else 0.0


def baseline_file(folder: Path, host: str | None = None) -> Path:
    return folder / f"baseline-{host or socket.gethostname()}.json"


def host_baseline(folder: Path, seconds: float, energy: Any) -> dict[str, Any]:
    """This host's idle power: read from ``folder`` when a job measured it, else measured here (one job per host
    measures; the others wait). Returns ``{"power_w": {component: watts}, "devices_w": {uuid: watts}, ...}``."""
    path = baseline_file(folder)
    lock = path.with_suffix(".lock")
    folder.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + WAIT_S
    while not path.exists():
        try:
            os.close(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
            continue
        try:
            measured = measure_idle(seconds, energy)
            records.write_text_atomic(path, json.dumps(measured, indent=1))
            return measured
        finally:
            with contextlib.suppress(OSError):
                lock.unlink()
    if path.exists():
        data: dict[str, Any] = json.loads(path.read_text())
        return data
    return measure_idle(seconds, energy)


def measure_idle(seconds: float, energy: Any) -> dict[str, Any]:
    """Idle power over ``seconds`` with the jobs' meters: machine-scope counters at their machine figure, every
    visible GPU by device."""
    from explaunch.measure.energy import EnergyTracker, job_gpus

    tracker = EnergyTracker.from_config(energy, job_gpus("auto", []))
    with tracker:
        time.sleep(seconds)
    if tracker.reading is None:
        return {"error": tracker.error, "seconds": seconds, "host": socket.gethostname()}
    reading = tracker.reading
    power: dict[str, float] = {}
    devices: dict[str, float] = {}
    for name, component in reading.components.items():
        if component["source"] == "modelled":
            continue
        joules = component.get("machine_joules") or component["joules"]
        power[name] = float(joules) / reading.window_s
        for uuid, device_joules in (component.get("devices") or {}).items():
            devices[uuid] = float(device_joules) / reading.window_s
    return {
        "host": socket.gethostname(),
        "seconds": reading.window_s,
        "power_w": power,
        "devices_w": devices,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def adjust(energy: dict[str, Any], baseline: dict[str, Any]) -> tuple[float, float, list[str]] | None:
    """(baseline power in W for this job's scope, energy - that power x window in J, components adjusted) for a
    reading's ``to_dict()``; None when the baseline has nothing for this reading's components."""
    components = energy.get("components") or {}
    window = float(energy.get("window_s") or 0.0)
    idle_w = 0.0
    adjusted: list[str] = []
    for name, component in components.items():
        if component["source"] == "modelled" or name not in baseline.get("power_w", {}):
            continue
        if component.get("devices"):
            watts = sum(float(baseline.get("devices_w", {}).get(uuid, 0.0)) for uuid in component["devices"])
        else:
            share = component.get("share")
            watts = float(baseline["power_w"][name]) * (1.0 if share is None else float(share))
        idle_w += watts
        adjusted.append(name)
    if not adjusted:
        return None
    total = sum(float(c["joules"]) for c in components.values())
    return idle_w, total - idle_w * window, adjusted
