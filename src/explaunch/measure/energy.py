"""Energy of a code region: hardware counters first, codecarbon's model where there is none, each figure labelled.

For every component (cpu, gpu, ram) the reading says its ``source``: ``counter`` (an energy counter read at the
window's edges and between them: RAPL ``energy_uj``, NVML total energy), ``sampled`` (power samples integrated) or
``modelled`` (codecarbon: TDP x load, RAM size x a constant), and its ``scope``: ``devices`` (the job's own GPUs),
``process`` (the job's process tree), ``machine`` (a whole package or GPU, or codecarbon's RAM floor: a constant of
the machine's model, whatever the job holds), ``apportioned`` (a machine counter split by the job's share of the
machine's busy CPU time, interval by interval, so that jobs side by side add up to no more than the machine).
Counters are read in the energy meter sidecar (:mod:`explaunch.measure.sidecar`, started by
:mod:`explaunch.measure.meter`) by :mod:`explaunch.measure.counters`; codecarbon runs there too, for the modelled
components and the grid's carbon intensity.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from explaunch.measure.meter import Stopping, Ticket

JOULES_PER_KWH = 3.6e6
# codecarbon CPU modes that read a power meter; any other mode (cpu_load, tdp, constant) is a model.
_MEASURED_CPU_MODES = frozenset({"intel_rapl", "intel_power_gadget", "windows_emi", "apple_powermetrics"})
# Below these a window's energy is noise: NVML/RAPL readings settle after a few seconds (ML.ENERGY), and a figure
# integrated from a handful of samples is mostly the edges.
QUALITY_MIN_WINDOW_S = 5.0
QUALITY_MIN_SAMPLES = 10
COMPONENTS = ("cpu", "gpu", "ram")
# codecarbon's RAM model (codecarbon/external/ram.py, 3.x) never gives less than two DIMMs' worth: 2 x 5 W on x86,
# 3 W on ARM, whatever memory it is given. tests/unit/test_energy.py holds these against codecarbon's own model.
CODECARBON_RAM_FLOOR_W = {"x86": 10.0, "arm": 3.0}


@dataclass(frozen=True)
class ComponentEnergy:
    """One component's energy over the window, as a counter meter (:mod:`explaunch.measure.counters`) reads it.
    ``scope`` says whose energy it is: ``apportioned`` is the job's share of ``machine_joules``; ``machine`` is a
    whole device that others may share (a MIG partition's parent GPU)."""

    joules: float
    source: str
    scope: str
    reads: int
    machine_joules: float | None = None
    share: float | None = None
    devices: dict[str, float] | None = None
    method: str = ""
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class EnergyReading:
    """The energy of one window, by component. Each component says its ``source`` (counter / sampled / modelled)
    and ``scope`` (devices / process / machine / apportioned); ``quality`` is ``low`` with its reasons when the
    window is too short or holds too few samples to mean much."""

    window_s: float
    components: dict[str, dict[str, Any]]
    emissions_kg: float
    emissions_method: str
    method: str
    quality: str
    quality_reasons: list[str]
    unavailable: dict[str, str]

    @property
    def energy_joules(self) -> float:
        return float(sum(c["joules"] for c in self.components.values()))

    @property
    def energy_kwh(self) -> float:
        return self.energy_joules / JOULES_PER_KWH

    def joules(self, component: str) -> float:
        return float(self.components[component]["joules"]) if component in self.components else 0.0

    def metrics(self, prefix: str) -> dict[str, float]:
        return {
            f"{prefix}_joules": self.energy_joules,
            f"{prefix}_kwh": self.energy_kwh,
            **{f"{prefix}_{c}_joules": self.joules(c) for c in COMPONENTS},
            f"{prefix}_emissions_kg": self.emissions_kg,
            f"{prefix}_window_s": self.window_s,
        }

    def fields(self) -> dict[str, Any]:
        return asdict(self)

    def to_dict(self) -> dict[str, Any]:
        return {"joules": self.energy_joules, **asdict(self)}


def window_quality(window_s: float, components: dict[str, dict[str, Any]]) -> list[str]:
    """Why a window's energy is low quality (empty: it is not)."""
    reasons = []
    if window_s < QUALITY_MIN_WINDOW_S:
        reasons.append(f"window {window_s:.2f} s < {QUALITY_MIN_WINDOW_S:g} s")
    for name, component in components.items():
        samples = component.get("reads", component.get("samples"))
        if samples is not None and component["source"] != "counter" and samples < QUALITY_MIN_SAMPLES:
            reasons.append(f"{name}: {samples} {component['source']} samples < {QUALITY_MIN_SAMPLES}")
    return reasons


def headline_quality(windows: Mapping[str, EnergyReading]) -> dict[str, Any]:
    """The quality of figures computed from several windows (``name -> reading``): ``low`` when any window is, each
    reason naming its window; ``quality_by_window`` keeps every window's own. A figure is no better than the worst
    reading it was computed from (decode energy = the generate window's less the prefill window's share)."""
    reasons = [f"{name} window: {reason}" for name, reading in windows.items() for reason in reading.quality_reasons]
    return {
        "quality": "low" if reasons else "ok",
        "quality_reasons": reasons,
        "quality_by_window": {
            name: {"quality": reading.quality, "quality_reasons": list(reading.quality_reasons)}
            for name, reading in windows.items()
        },
    }


def codecarbon_ram(codecarbon: dict[str, Any], common: dict[str, Any]) -> dict[str, Any]:
    """codecarbon's RAM figure, labelled. Its model is watts per DIMM from a memory size, never below two DIMMs
    (about 10 W). In ``process`` mode the size is the job's resident memory, but a job under ~16 GB gets the floor
    whatever it does: a constant of the machine's model, charged in full to each job running side by side. Only a
    figure above the floor follows the job's memory; the floor is labelled ``machine``, with a note."""
    scope = codecarbon.get("scope", "process")
    floor_w = float(codecarbon.get("ram_floor_w", 0.0))  # none given: no floor known, the figure as codecarbon says
    at_floor = floor_w > 0 and float(codecarbon.get("ram_w", 0.0)) <= floor_w + 1e-6
    component = {
        "joules": codecarbon["ram_kwh"] * JOULES_PER_KWH,
        "source": "modelled",
        "scope": "machine" if at_floor else scope,
        "method": f"codecarbon {codecarbon['version']}: W per DIMM from the memory size "
        "(at least 2 DIMMs, ~10 W): a constant, not a meter",
        **common,
    }
    if at_floor and scope == "process":
        component["note"] = (
            f"codecarbon's floor of {floor_w:g} W (its 2-DIMM minimum): a per-machine constant model, not this "
            "job's memory; each job running beside others is charged all of it"
        )
    return component


def combine(
    window_s: float,
    counted: dict[str, dict[str, Any]],
    unavailable: dict[str, str],
    codecarbon: dict[str, Any] | None,
) -> EnergyReading:
    """One reading from the counters (``counted``: component -> ComponentEnergy.to_dict()) and codecarbon's
    figures (``codecarbon_figures``) for the components no counter covers. codecarbon's GPU figure is never taken:
    it covers every visible GPU, not the job's own; GPUs come from the counter meter or not at all."""
    components = dict(counted)
    if codecarbon is not None:
        interval = float(codecarbon["interval_s"])
        samples = int(window_s // interval) + 1  # codecarbon measures on a fixed timer, and once more at stop
        common = {"samples": samples, "interval_s": interval}
        if "cpu" not in components:
            measured = codecarbon["cpu_mode"] in _MEASURED_CPU_MODES
            components["cpu"] = {
                "joules": codecarbon["cpu_kwh"] * JOULES_PER_KWH,
                "source": "sampled" if measured else "modelled",
                "scope": "machine" if measured else codecarbon.get("scope", "process"),
                "method": f"codecarbon {codecarbon['version']} cpu_mode={codecarbon['cpu_mode']}"
                + ("" if measured else f": TDP x CPU load ({codecarbon.get('scope', 'process')} mode)"),
                **common,
            }
        if "ram" not in components:
            components["ram"] = codecarbon_ram(codecarbon, common)
    total_kwh = sum(c["joules"] for c in components.values()) / JOULES_PER_KWH
    if codecarbon is not None and codecarbon["energy_kwh"] > 0:
        factor = codecarbon["emissions_kg"] / codecarbon["energy_kwh"]
        emissions = factor * total_kwh
        emissions_method = (
            f"codecarbon {codecarbon['version']} carbon intensity of {codecarbon['country']}: "
            f"{factor * 1000:.1f} g CO2eq/kWh x this energy"
        )
    else:
        emissions = 0.0
        emissions_method = "no carbon intensity (codecarbon gave none)"
    reasons = window_quality(window_s, components)
    sources = sorted({f"{n}: {c['source']}/{c['scope']}" for n, c in components.items()})
    return EnergyReading(
        window_s=window_s,
        components=components,
        emissions_kg=emissions,
        emissions_method=emissions_method,
        method="; ".join(sources) + " (counters read from the energy meter sidecar)",
        quality="low" if reasons else "ok",
        quality_reasons=reasons,
        unavailable=dict(unavailable),
    )


def job_gpus(device: str, gpu_ids: Sequence[int]) -> dict[str, Any] | None:
    """The GPUs a job (or one rank of it) measures: None on ``cpu``; else CUDA ordinals (``gpu_ids``; empty: every
    visible one) into ``CUDA_VISIBLE_DEVICES`` as this process sees it (SLURM sets it to the job's allocation)."""
    if device == "cpu":
        return None
    return {"visible": os.environ.get("CUDA_VISIBLE_DEVICES"), "ids": [int(i) for i in gpu_ids]}


class EnergyTracker:
    """``with EnergyTracker(...) as tracker: ...`` then ``tracker.reading``.

    The meters run in this process's energy meter sidecar (:mod:`explaunch.measure.meter`), not in this process:
    their sampling threads would slow a GIL-bound job. The first tracker of a process waits for the sidecar's start
    and hardware probe (about 0.4 s); later ones take a few milliseconds. A meter that fails never fails the measured
    code: ``reading`` stays None and ``error`` says why. ``synchronize`` (a CUDA job: ``torch.cuda.synchronize``) is
    called right before each edge, so that queued GPU work falls inside the window it belongs to.
    """

    def __init__(
        self,
        country_iso_code: str = "USA",
        measure_power_secs: float = 1.0,
        csv_path: Path | None = None,
        *,
        await_start: bool = True,
        sample_interval_s: float = 0.2,
        powercap_root: str = "/sys/class/powercap",
        gpus: dict[str, Any] | None = None,
        synchronize: Callable[[], object] | None = None,
    ) -> None:
        """``await_start=False``: ``__enter__`` returns without waiting for the sidecar to start the tracker (a
        job's whole run, whose set-up goes on meanwhile); a measured region waits, so that the sidecar's work is
        done before the region begins."""
        self.await_start = await_start
        self.country_iso_code = country_iso_code
        self.measure_power_secs = measure_power_secs
        self.sample_interval_s = sample_interval_s
        self.powercap_root = powercap_root
        self.gpus = gpus
        self.synchronize = synchronize
        self.csv_path = csv_path  # codecarbon's own emissions.csv, when wanted
        self.reading: EnergyReading | None = None
        self.error: str | None = None
        self._ticket: Ticket | None = None  # the tracker running in the sidecar
        self._stopping: Stopping | None = None  # its stop, requested

    @classmethod
    def from_config(
        cls,
        energy: Any,
        gpus: dict[str, Any] | None,
        *,
        synchronize: Callable[[], object] | None = None,
        csv_path: Path | None = None,
        await_start: bool = True,
    ) -> EnergyTracker:
        """A tracker with the settings of an ``energy`` config node (explaunch.config.EnergyConfig)."""
        return cls(
            energy.country_iso_code,
            energy.measure_power_secs,
            csv_path,
            await_start=await_start,
            sample_interval_s=energy.sample_interval_s,
            powercap_root=energy.powercap_root,
            gpus=gpus,
            synchronize=synchronize,
        )

    def __enter__(self) -> EnergyTracker:
        from explaunch.measure import meter

        try:
            if self.synchronize is not None:
                self.synchronize()
            request = {
                "country": self.country_iso_code,
                "interval": self.measure_power_secs,
                "csv": None if self.csv_path is None else str(self.csv_path),
                "sample_interval": self.sample_interval_s,
                "powercap_root": self.powercap_root,
                "gpus": self.gpus,
            }
            self._ticket = meter.start(request, wait=self.await_start)
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
            if self.synchronize is not None:
                self.synchronize()
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
        if self.reading is None:
            self.error = "no meter recorded any energy"


def codecarbon_figures(tracker: Any, interval_s: float, scope: str = "process") -> dict[str, Any] | None:
    """What :func:`combine` takes from a stopped codecarbon tracker (its public ``final_emissions_data``);
    ``scope``: what its CPU and RAM meters covered (``process``: the job's processes; ``machine``: the fallback of
    :mod:`explaunch._compat`)."""
    from explaunch import _compat

    data = getattr(tracker, "final_emissions_data", None)
    if data is None:
        return None
    return {
        "version": _compat.codecarbon_release(),
        "cpu_mode": _compat.codecarbon_cpu_mode(tracker),
        "scope": scope,
        "country": data.country_iso_code,
        "interval_s": interval_s,
        "duration_s": float(data.duration),
        "energy_kwh": float(data.energy_consumed),
        "cpu_kwh": float(data.cpu_energy),
        "ram_kwh": float(data.ram_energy),
        "ram_w": float(data.ram_power),  # the window's mean
        "ram_floor_w": CODECARBON_RAM_FLOOR_W["arm" if _is_arm() else "x86"],
        "emissions_kg": float(data.emissions),
    }


def _is_arm() -> bool:
    """As codecarbon tells ARM from x86 for its RAM model."""
    import platform

    return any(arm in platform.machine().lower() for arm in ("arm", "aarch"))
