"""Budgets: ``hydra.sweeper.budget.{energy_kwh,emissions_kg,gpu_hours,wall_hours}``. The sweep stops launching
before a budget would be passed, projected from the jobs done so far, and ends with ``stop_reason=budget``.

What each spends, read from a job's record (``job.json``, :class:`explaunch.sweepdir.records.JobRecord`):

- ``energy_kwh``: the whole job's energy, ``record.energy["joules"]`` (else the metric ``job_energy_joules``, else
  ``energy_joules``, the measured window only), / 3.6e6.
- ``emissions_kg``: ``record.energy["emissions_kg"]`` (else the metric ``job_energy_emissions_kg``, else
  ``energy_emissions_kg``).
- ``gpu_hours``: ``duration_s`` x the GPUs the job had / 3600 (see :func:`gpu_count`; 0 on the CPU).
- ``wall_hours``: the time since the sweep started (not per job).

The next job is projected to spend the mean per job so far (of the jobs that reported that quantity; for wall
hours, the time since the start per job done, which includes the launcher's parallelism).

How the sweeper uses it::

    budget = Budget(settings.budget, total_jobs=len(jobs_to_run), started_at=time.time()) if settings.budget else None
    ...
    # each record of an attempt that ran in this sweep (completed, failed, timed out; retried attempts too: they
    # spent as well); not the records of jobs skipped as done before
    budget.add(record)
    ...
    # before launching the next batch (n: the jobs about to start, plus those still running)
    reason = budget.would_exceed(time.time(), next_jobs=n)
    if reason is not None:
        stop_reason = "budget"; log.warning("stopping: %s", reason)   # launch nothing more
    ...
    sweep record / status: budget.spent()   # {name: {"budget", "spent", "per_job", "projected"}}

``started_at`` and ``now`` are the same clock's (``time.time()`` or ``time.monotonic()``), in seconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from explaunch.sweepdir.records import JobRecord

BUDGETS = ("energy_kwh", "emissions_kg", "gpu_hours", "wall_hours")
JOULES_PER_KWH = 3.6e6
UNITS = {"energy_kwh": "kWh", "emissions_kg": "kg CO2eq", "gpu_hours": "GPU-hours", "wall_hours": "hours"}
LABELS = {"energy_kwh": "energy", "emissions_kg": "emissions", "gpu_hours": "GPU", "wall_hours": "wall-clock"}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value or value < 0:
        return None
    return float(value)


def _first(*values: Any) -> float | None:
    for value in values:
        number = _number(value)
        if number is not None:
            return number
    return None


def energy_kwh(record: JobRecord) -> float | None:
    """The job's energy in kWh; None where it measured none."""
    joules = _first(
        record.energy.get("joules"), record.metrics.get("job_energy_joules"), record.metrics.get("energy_joules")
    )
    return None if joules is None else joules / JOULES_PER_KWH


def emissions_kg(record: JobRecord) -> float | None:
    """The job's emissions in kg CO2eq; None where it measured no energy."""
    return _first(
        record.energy.get("emissions_kg"),
        record.metrics.get("job_energy_emissions_kg"),
        record.metrics.get("energy_emissions_kg"),
    )


def gpu_count(record: JobRecord) -> int:
    """The GPUs the job had: 0 with ``hardware.device=cpu``; else the GPUs its energy was measured on
    (``energy.components.gpu.devices``), else ``hardware.gpu_ids``, else ``hardware.num_gpus``, else the GPUs its
    snapshot saw (``snapshot.gpus``: every GPU visible to it; none on a machine without)."""
    hardware = record.config.get("hardware")
    hardware = hardware if isinstance(hardware, Mapping) else {}
    if hardware.get("device") == "cpu":
        return 0
    components = record.energy.get("components")
    gpu = components.get("gpu") if isinstance(components, Mapping) else None
    devices = gpu.get("devices") if isinstance(gpu, Mapping) else None
    if isinstance(devices, Mapping | list) and devices:
        return len(devices)
    ids = hardware.get("gpu_ids")
    if isinstance(ids, list) and ids:
        return len(ids)
    asked = hardware.get("num_gpus")
    if isinstance(asked, int) and not isinstance(asked, bool) and asked > 0:
        return asked
    seen = record.snapshot.get("gpus")
    return len(seen) if isinstance(seen, list) else 0


def gpu_hours(record: JobRecord) -> float:
    return max(record.duration_s, 0.0) * gpu_count(record) / 3600.0


@dataclass
class _Tally:
    spent: float = 0.0
    jobs: int = 0  # jobs that reported this quantity


class Budget:
    """The budgets set (``{name: limit}``, names of :data:`BUDGETS`), what the jobs added so far spent, and whether
    the next jobs would pass one."""

    def __init__(self, budgets: Mapping[str, float], total_jobs: int, started_at: float) -> None:
        unknown = [name for name in budgets if name not in BUDGETS]
        if unknown:
            raise ValueError(f"unknown budget {', '.join(unknown)}; known: {', '.join(BUDGETS)}")
        self.budgets = {name: float(budgets[name]) for name in BUDGETS if name in budgets}
        self.total_jobs = total_jobs
        self.started_at = started_at
        self.jobs = 0  # records added
        self.tallies = {name: _Tally() for name in self.budgets if name != "wall_hours"}

    def add(self, record: JobRecord) -> None:
        """Count what one job (one attempt) spent."""
        self.jobs += 1
        readings = {"energy_kwh": energy_kwh, "emissions_kg": emissions_kg, "gpu_hours": gpu_hours}
        for name, tally in self.tallies.items():
            value = readings[name](record)
            if value is not None:
                tally.spent += value
                tally.jobs += 1

    def _spent_and_per_job(self, name: str, now: float) -> tuple[float, float | None]:
        if name == "wall_hours":
            hours = max(now - self.started_at, 0.0) / 3600.0
            return hours, (hours / self.jobs if self.jobs else None)
        tally = self.tallies[name]
        return tally.spent, (tally.spent / tally.jobs if tally.jobs else None)

    def would_exceed(self, now: float, next_jobs: int = 1) -> str | None:
        """A one-line reason when a budget is reached, or would be passed by ``next_jobs`` more jobs each spending
        the mean per job so far; None while every budget holds (or before any job reported what it spent)."""
        for name, limit in self.budgets.items():
            spent, per_job = self._spent_and_per_job(name, now)
            head = f"{LABELS[name]} budget {limit:g} {UNITS[name]}: {spent:.3g} spent"
            if spent >= limit:
                return f"{head}, reached"
            if per_job is not None and spent + next_jobs * per_job > limit:
                more = "the next job" if next_jobs == 1 else f"the next {next_jobs} jobs"
                return f"{head}, {more} would pass it (~{per_job:.2g} {UNITS[name]} per job)"
        return None

    def spent(self, now: float | None = None) -> dict[str, dict[str, float | None]]:
        """``{name: {"budget", "spent", "per_job", "projected"}}`` for the sweep record and status; ``projected``:
        what all ``total_jobs`` would spend at the mean so far (None before a job reported it). ``now`` is needed
        for ``wall_hours`` (left out of the result without it)."""
        out: dict[str, dict[str, float | None]] = {}
        for name, limit in self.budgets.items():
            if name == "wall_hours" and now is None:
                continue
            spent, per_job = self._spent_and_per_job(name, 0.0 if now is None else now)
            left = max(self.total_jobs - self.jobs, 0)
            projected = None if per_job is None else spent + left * per_job
            out[name] = {"budget": limit, "spent": spent, "per_job": per_job, "projected": projected}
        return out
