"""How much of what a job was given it used: ``cpu_efficiency`` and ``gpu_efficiency``, from 0 to 1.

``cpu_efficiency`` = the CPU seconds of the job's process tree / (the job's wall seconds x the CPUs allocated to it).
The CPU seconds are read when the job's recording starts and when it ends (user + system time of the job's process
and its descendants, and of the children they reaped), less this process's helpers: the energy meter sidecar and
the MLflow relay run beside the jobs but are no part of them. The CPUs allocated to it:

- the cores this process may run on (``os.sched_getaffinity``: a SLURM job's cpuset, ``taskset``, a container);
- at most ``SLURM_CPUS_PER_TASK`` where SLURM set it (a cluster without cpusets leaves the affinity whole);
- shared by the joblib launcher's workers: each job gets its share of the cores (``n_jobs`` as joblib resolves it).

A job that used more than its share (idle workers beside it) reads 1. ``gpu_efficiency``: the mean utilisation
(NVML's, 0..100 %, as ``resources.csv`` samples it) of the job's GPUs over its run, divided by 100; only where the
resource sampler ran, saw the job's GPUs, and the job is not a CPU job.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import asdict, dataclass
from typing import Any

helper_pids: set[int] = set()  # processes of ours started beside the jobs in this process's tree (the MLflow relay)
_GPU_UTIL = re.compile(r"gpu(\d+)_util_percent")


def tree_cpu_seconds(pid: int | None = None, exclude: AbstractSet[int] | None = None) -> float:
    """CPU time (user + system) of ``pid`` (this process) and its living descendants, with the time of the children
    each one reaped; ``exclude`` (default: this process's helpers) left out with their descendants."""
    import psutil

    root = psutil.Process(pid)
    skip = {*helper_pids, _sidecar_pid()} if exclude is None else set(exclude)
    total = 0.0
    pending = [root]
    while pending:
        process = pending.pop()
        if process.pid in skip:
            continue
        try:
            times = process.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
            pending.extend(process.children())
        except psutil.Error:  # ended meanwhile
            continue
    return total


def _sidecar_pid() -> int:
    """This process's energy meter sidecar, if one runs (-1: none); the meter module is not imported for it."""
    meter = sys.modules.get("explaunch.measure.meter")
    pid = getattr(meter, "sidecar_pid", lambda: None)() if meter is not None else None
    return int(pid) if pid is not None else -1


def allocated_cpus(launcher: Any = None, environ: Mapping[str, str] | None = None) -> tuple[float, str]:
    """The CPUs a job was given, and how that was found (see the module's docstring). ``launcher``: the job's
    ``hydra.launcher`` node (None: not known)."""
    env = os.environ if environ is None else environ
    cores = len(os.sched_getaffinity(0))
    basis = f"{cores} cores of the process's affinity"
    slurm = env.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and 0 < int(slurm) < cores:
        cores, basis = int(slurm), f"SLURM_CPUS_PER_TASK={slurm}"
    workers = joblib_workers(launcher)
    if workers > 1:
        return cores / workers, f"{basis}, shared by {workers} joblib workers"
    return float(cores), basis


def joblib_workers(launcher: Any) -> int:
    """How many jobs the joblib launcher runs side by side (1 for any other launcher)."""
    target = str(_get(launcher, "_target_") or "")
    if not target.endswith(("JoblibLauncher", "local_launcher.ExplaunchLocalLauncher")):
        return 1
    n_jobs = _get(launcher, "n_jobs")
    try:
        from joblib import effective_n_jobs

        return max(1, int(effective_n_jobs(int(n_jobs) if n_jobs is not None else 1)))
    except (ImportError, TypeError, ValueError):
        return 1


def _get(node: Any, key: str) -> Any:
    if node is None:
        return None
    if isinstance(node, Mapping):
        return node.get(key)
    return getattr(node, key, None)


def cpu_efficiency(cpu_seconds: float, wall_s: float, cpus: float) -> float | None:
    """The share of the allocated CPU time used, 0..1; None without a wall time or an allocation."""
    if wall_s <= 0 or cpus <= 0:
        return None
    return min(1.0, max(0.0, cpu_seconds / (wall_s * cpus)))


def job_gpu_indices(device: str, gpu_ids: Sequence[int], visible: str | None) -> list[int] | None:
    """The NVML indices of the GPUs a job was given, as ``resources.csv`` names them (``gpu<i>_...``); [] for a CPU
    job; None where they cannot be told (``CUDA_VISIBLE_DEVICES`` by UUID). As :mod:`explaunch.measure`, indices
    are NVML's order."""
    if device == "cpu":
        return []
    if visible is None:
        return list(gpu_ids) if gpu_ids else None  # None here: every GPU the sampler saw
    entries = [e.strip() for e in visible.split(",") if e.strip()]
    if not all(e.isdigit() for e in entries):
        return None
    listed = [int(e) for e in entries]
    return [listed[i] for i in gpu_ids if 0 <= i < len(listed)] if gpu_ids else listed


def gpu_efficiency(mean: Mapping[str, float], indices: list[int] | None) -> float | None:
    """The mean utilisation of the GPUs ``indices`` (None: every sampled GPU) from the sampler's means, 0..1; None
    where none of them was sampled."""
    sampled = {int(m.group(1)): float(v) for k, v in mean.items() if (m := _GPU_UTIL.fullmatch(k))}
    chosen = [sampled[i] for i in (sampled if indices is None else indices) if i in sampled]
    if not chosen:
        return None
    return min(1.0, max(0.0, sum(chosen) / len(chosen) / 100.0))


@dataclass(frozen=True)
class Efficiency:
    """What a job's efficiency figures were computed from, kept in its record (``resources.efficiency``)."""

    cpu_seconds: float
    wall_s: float
    cpus_allocated: float
    cpus_basis: str
    cpu_efficiency: float | None
    gpu_efficiency: float | None = None

    def metrics(self) -> dict[str, float]:
        found = {"cpu_efficiency": self.cpu_efficiency, "gpu_efficiency": self.gpu_efficiency}
        return {k: v for k, v in found.items() if v is not None}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure(
    cpu_seconds: float,
    wall_s: float,
    launcher: Any,
    resources_mean: Mapping[str, float] | None,
    gpu_indices: list[int] | None,
) -> Efficiency:
    """The job's efficiency from its CPU seconds and wall time, its launcher, and the sampler's means (None: the
    sampler did not run)."""
    cpus, basis = allocated_cpus(launcher)
    gpu = gpu_efficiency(resources_mean, gpu_indices) if resources_mean is not None and gpu_indices != [] else None
    return Efficiency(cpu_seconds, wall_s, cpus, basis, cpu_efficiency(cpu_seconds, wall_s, cpus), gpu)
