"""Energy of a code region with codecarbon, offline.

codecarbon runs in *process* mode so that parallel jobs on one machine each get the share of CPU power their own
process used, not the whole machine. Every component says where its figure comes from: ``measured`` when read from
a meter (RAPL, NVML, ...), ``estimated`` when codecarbon modelled it (CPU power from load and TDP, RAM from size).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from explaunch.measure.meter import Stopping, Ticket

JOULES_PER_KWH = 3.6e6
# codecarbon CPU modes that read a power meter; any other mode (cpu_load, tdp, constant) is a model.
_MEASURED_CPU_MODES = frozenset({"intel_rapl", "intel_power_gadget", "windows_emi", "apple_powermetrics"})


@dataclass(frozen=True)
class EnergyReading:
    duration_s: float
    energy_kwh: float
    cpu_kwh: float
    gpu_kwh: float
    ram_kwh: float
    emissions_kg: float
    cpu_power_w: float
    gpu_power_w: float
    ram_power_w: float
    sources: dict[str, str]  # component -> measured | estimated | absent
    method: str

    @property
    def energy_joules(self) -> float:
        return self.energy_kwh * JOULES_PER_KWH

    def metrics(self, prefix: str) -> dict[str, float]:
        return {
            f"{prefix}_kwh": self.energy_kwh,
            f"{prefix}_joules": self.energy_joules,
            f"{prefix}_cpu_kwh": self.cpu_kwh,
            f"{prefix}_gpu_kwh": self.gpu_kwh,
            f"{prefix}_ram_kwh": self.ram_kwh,
            f"{prefix}_emissions_kg": self.emissions_kg,
            f"{prefix}_duration_s": self.duration_s,
        }

    def fields(self) -> dict[str, Any]:
        return asdict(self)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "energy_joules": self.energy_joules}


class EnergyTracker:
    """``with EnergyTracker(...) as tracker: ...`` then ``tracker.reading``.

    codecarbon runs in this process's energy meter sidecar (:mod:`explaunch.measure.meter`), not in this process:
    its sampling threads would slow a GIL-bound job. The first tracker of a process waits for the sidecar's start
    and hardware probe (about 0.4 s); later ones take a few milliseconds. A meter that fails never fails the measured
    code: ``reading`` stays None and ``error`` says why.
    """

    def __init__(
        self,
        country_iso_code: str = "USA",
        measure_power_secs: float = 1.0,
        csv_path: Path | None = None,
        *,
        await_start: bool = True,
    ) -> None:
        """``await_start=False``: ``__enter__`` returns without waiting for the sidecar to start the tracker (a
        job's whole run, whose set-up goes on meanwhile); a measured region waits, so that the sidecar's work is
        done before the region begins."""
        self.await_start = await_start
        self.country_iso_code = country_iso_code
        self.measure_power_secs = measure_power_secs
        self.csv_path = csv_path  # codecarbon's own emissions.csv, when wanted
        self.reading: EnergyReading | None = None
        self.error: str | None = None
        self._ticket: Ticket | None = None  # the tracker running in the sidecar
        self._stopping: Stopping | None = None  # its stop, requested

    def __enter__(self) -> EnergyTracker:
        from explaunch.measure import meter

        try:
            csv = None if self.csv_path is None else str(self.csv_path)
            self._ticket = meter.start(self.country_iso_code, self.measure_power_secs, csv, wait=self.await_start)
        except meter.MeterError as ex:
            self.error = f"energy meter: {ex}"
        return self

    def request_stop(self) -> None:
        """Ask the sidecar to stop the tracker now; ``__exit__`` then only collects the reading (work done between
        the two overlaps with the sidecar's last sample)."""
        from explaunch.measure import meter

        if self._ticket is None or self._stopping is not None:
            return
        try:
            self._stopping = meter.stop_request(self._ticket)
        except meter.MeterError as ex:
            self.error = f"energy meter: {ex}"
            self._ticket = None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        from explaunch.measure import meter

        self.request_stop()
        stopping, self._stopping, self._ticket = self._stopping, None, None
        if stopping is None:
            return
        try:
            fields = stopping.reading()
        except meter.MeterError as ex:
            self.error = f"energy meter: {ex}"
            return
        self.reading = None if fields is None else EnergyReading(**fields)
        if self.reading is None:  # codecarbon swallows its own errors in start()/stop() and only logs them
            self.error = "codecarbon recorded no energy"


def reading_from(tracker: Any) -> EnergyReading | None:
    from importlib.metadata import version

    data = getattr(tracker, "final_emissions_data", None)
    if data is None:
        return None
    hardware = {type(h).__name__: h for h in tracker._hardware}  # codecarbon keeps no public list of meters
    cpu = hardware.get("CPU")
    cpu_mode = getattr(cpu, "_mode", "absent") if cpu is not None else "absent"
    sources = {
        "cpu": "absent" if cpu is None else ("measured" if cpu_mode in _MEASURED_CPU_MODES else "estimated"),
        "gpu": "measured" if "GPU" in hardware else "absent",  # codecarbon reads GPUs through NVML
        "ram": "estimated",  # codecarbon models RAM power from its size; there is no RAM meter
    }
    method = (
        f"codecarbon {version('codecarbon')} offline, tracking_mode=process (sampled from a sidecar process), "
        f"cpu_mode={cpu_mode}, "
        f"country={data.country_iso_code}"
    )
    return EnergyReading(
        duration_s=float(data.duration),
        energy_kwh=float(data.energy_consumed),
        cpu_kwh=float(data.cpu_energy),
        gpu_kwh=float(data.gpu_energy),
        ram_kwh=float(data.ram_energy),
        emissions_kg=float(data.emissions),
        cpu_power_w=float(data.cpu_power),
        gpu_power_w=float(data.gpu_power),
        ram_power_w=float(data.ram_power),
        sources=sources,
        method=method,
    )
