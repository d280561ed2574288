"""Every use of another library's private parts, in one place, each with why, the releases it was read against, a
check that falls back to the public path, and a test (tests/unit/test_compat.py) that fails loudly when upstream
changes them.

codecarbon
    explaunch's energy sidecar measures a job from another process. codecarbon (through 3.3) measures only the
    process it runs in (``tracking_mode="process"``) or the whole machine (``"machine"``); pointing its CPU and RAM
    meters at the job needs their private attributes (``CPU._pid/_process/_last_cpu_times/_last_measurement_time``,
    ``RAM._pid/_get_children_memories``, the tracker's ``_hardware`` list and ``_ensure_hardware_ready``), read in
    ``codecarbon/external/hardware.py``, ``ram.py`` and ``emissions_tracker.py`` of 3.3.2. Fallback (another
    release, or an attribute gone): the public ``tracking_mode="machine"``, and the record says the modelled CPU and
    RAM figures cover the machine (scope ``machine``), not the job.
py-cpuinfo
    codecarbon asks py-cpuinfo for the CPU's brand string, which py-cpuinfo finds by running itself in a subprocess
    (~1 s of a busy core per sidecar, measured: B2 and SLURM job start). ``answer_cpu_model`` replaces its public
    ``get_cpu_info`` in the sidecar's own process with the string /proc/cpuinfo lists; elsewhere nothing changes.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

CODECARBON_READ = ("3.3",)  # major.minor releases whose private attributes were read
CODECARBON_CPU_ATTRS = ("_pid", "_process", "_last_cpu_times", "_last_measurement_time")
CODECARBON_RAM_ATTRS = ("_pid", "_get_children_memories")


def codecarbon_release() -> str:
    try:
        return version("codecarbon")
    except PackageNotFoundError:
        return "absent"


def codecarbon_retargetable() -> bool:
    """Whether the installed codecarbon is one whose meters explaunch knows how to point at another process."""
    return ".".join(codecarbon_release().split(".")[:2]) in CODECARBON_READ


def codecarbon_meters(tracker: Any) -> list[Any] | None:
    """The tracker's meters (CPU, RAM, GPU objects), built now; None where this codecarbon does not have them."""
    ensure = getattr(tracker, "_ensure_hardware_ready", None)
    if ensure is None:
        return None
    ensure()  # else done by start()
    meters = getattr(tracker, "_hardware", None)
    return list(meters) if isinstance(meters, list) else None


def retarget_meters(meters: list[Any], client_pid: int, client: Any, memories: Any) -> bool:
    """Point the CPU meter at ``client`` (a psutil.Process) and the RAM meter at ``client_pid`` with ``memories()``
    listing the children's memory. False, touching nothing, where a meter lacks an attribute it is known by."""
    cpus = [m for m in meters if type(m).__name__ == "CPU"]
    rams = [m for m in meters if type(m).__name__ == "RAM"]
    if not all(hasattr(m, a) for m in cpus for a in CODECARBON_CPU_ATTRS) or not all(
        hasattr(m, a) for m in rams for a in CODECARBON_RAM_ATTRS
    ):
        return False
    for cpu in cpus:
        cpu._pid = client_pid
        cpu._process = client
        cpu._last_cpu_times = {}
        cpu._last_measurement_time = None
    for ram in rams:
        ram._pid = client_pid
        ram._get_children_memories = memories
    return True


def codecarbon_cpu_mode(tracker: Any) -> str:
    """How codecarbon got the CPU's power (its CPU meter's ``_mode``: ``intel_power_gadget``, ``intel_rapl``,
    ``constant``, ...), ``absent`` without a CPU meter, ``unknown`` where this codecarbon does not say."""
    meters = getattr(tracker, "_hardware", None)
    cpus = [m for m in meters or [] if type(m).__name__ == "CPU"]
    if not cpus:
        return "absent" if isinstance(meters, list) else "unknown"
    return str(getattr(cpus[0], "_mode", "unknown"))


def answer_cpu_model(model: str) -> bool:
    """py-cpuinfo, in this process, answers ``model`` at once instead of probing in a subprocess."""
    try:
        import cpuinfo
    except ImportError:
        return False
    cpuinfo.get_cpu_info = lambda: {"brand_raw": model}
    return True
