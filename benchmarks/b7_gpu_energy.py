"""B7 (NVIDIA GPUs only): a GPU job's energy from NVML power sampling against the GPU's total-energy counter.

The job (an LLM job on the GPU, recording on, ``tracking=none``) records both: the whole job's GPU energy in
``job.json`` (``energy.components.gpu``: the difference of ``nvmlDeviceGetTotalEnergyConsumption`` over the job on
the job's devices, ``source: counter``; ``metrics.job_energy_gpu_joules`` where the component is absent), and the
resource sampler's ``gpu<i>_power_w`` every ``resources.interval_s`` in ``resources.csv`` (``i``: NVML's index of
every GPU on the machine), integrated here over ``elapsed_s`` with the trapezoid rule on the columns of the
counter's devices only (an idle GPU beside the job would otherwise count). The target: they agree within 2 %.

Without NVML (no NVIDIA GPU, or no driver) the benchmark is skipped, which is not a failure; so is a GPU without an
energy counter (the job's GPU energy is then itself sampled: nothing to compare).
"""

from __future__ import annotations

import csv
import itertools
import json
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.harness import MAIN, BenchResult, Context, Row, Spread, Target, skipped, timed_run

ID = "B7"
TITLE = "GPU job energy: NVML power sampling vs the total-energy counter"
TARGET = Target("<=", 2.0)
JOB_TIMEOUT_S = 300.0
# About 0.4 B parameters with random weights (built in seconds), 64 x 128 new tokens per generate call: the GPU draws
# well above idle for the whole measured window (energy.min_window_s, 10 s by default) without a download.
GPU_JOB = (
    "hardware=gpu",
    "model.hidden_size=2048",
    "model.intermediate_size=5632",
    "model.num_hidden_layers=8",
    "model.num_attention_heads=16",
    "model.num_key_value_heads=4",
    "batch=64",
    "batching.num_prompts=128",  # the shipped prompt set has 240
    "batching.max_new_tokens=128",
    "experiment_type.flops=none",
    "tracking=none",
)


@dataclass(frozen=True)
class GpuCounter:
    """The whole job's GPU energy as the record gives it."""

    joules: float
    source: str  # counter | sampled | unknown (only the flat metric was there)
    devices: tuple[str, ...]  # GPU UUIDs; empty when the record does not say


def nvml_unavailable() -> str | None:
    """Why there is no GPU to measure, or None when NVML sees at least one."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as ex:
        return f"no NVIDIA GPU (NVML not available: {type(ex).__name__})"
    try:
        count = int(pynvml.nvmlDeviceGetCount())
    finally:
        pynvml.nvmlShutdown()
    return None if count else "no NVIDIA GPU (NVML sees no device)"


def job_gpu_counter(record: Mapping[str, Any]) -> GpuCounter:
    """The whole job's GPU energy: ``energy.components.gpu`` of the record, else ``metrics.job_energy_gpu_joules``."""
    components = (record.get("energy") or {}).get("components") or {}
    gpu = components.get("gpu")
    if isinstance(gpu, Mapping) and gpu.get("joules") is not None:
        devices = gpu.get("devices")
        uuids = tuple(devices) if isinstance(devices, Mapping) else ()
        return GpuCounter(float(gpu["joules"]), str(gpu.get("source", "unknown")), uuids)
    metrics = record.get("metrics") or {}
    if "job_energy_gpu_joules" in metrics:
        return GpuCounter(float(metrics["job_energy_gpu_joules"]), "unknown", ())
    raise RuntimeError("the job recorded no GPU energy (energy.components.gpu, metrics.job_energy_gpu_joules)")


def nvml_indices(uuids: Iterable[str]) -> list[int]:
    """NVML's index (the ``i`` of ``gpu<i>_power_w``) of each GPU UUID; needs NVML."""
    import pynvml

    pynvml.nvmlInit()
    try:
        index_of = {}
        for i in range(int(pynvml.nvmlDeviceGetCount())):
            uuid = pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(i))
            index_of[uuid.decode() if isinstance(uuid, bytes) else str(uuid)] = i
    finally:
        pynvml.nvmlShutdown()
    missing = [u for u in uuids if u not in index_of]
    if missing:
        raise RuntimeError(f"NVML does not know the job's GPU(s) {', '.join(missing)}")
    return [index_of[u] for u in uuids]


def power_columns(header: Sequence[str], indices: Iterable[int] | None = None) -> list[str]:
    """The ``gpu<i>_power_w`` columns of ``header``: every GPU's, or those of ``indices`` (all must be there)."""
    every = [c for c in header if c.startswith("gpu") and c.endswith("_power_w")]
    if indices is None:
        return every
    wanted = [f"gpu{i}_power_w" for i in indices]
    missing = [c for c in wanted if c not in every]
    if missing:
        raise RuntimeError(f"resources.csv has no column {', '.join(missing)}")
    return wanted


def sampled_joules(resources_csv: Path, indices: Iterable[int] | None = None) -> float:
    """Trapezoid integral of the summed ``gpu<i>_power_w`` columns (all GPUs', or those of ``indices``) over
    ``elapsed_s``; a sample with a GPU column left empty is passed over."""
    with resources_csv.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns = power_columns(reader.fieldnames or [], indices)
        rows = [row for row in reader if all(row.get(c) for c in columns)]
    if len(rows) < 2 or not columns:
        raise RuntimeError(f"{resources_csv}: fewer than 2 samples or no GPU power column")
    points = [(float(r["elapsed_s"]), sum(float(r[c]) for c in columns)) for r in rows]
    return sum((t1 - t0) * (p0 + p1) / 2 for (t0, p0), (t1, p1) in itertools.pairwise(points))


def compare(run_dir: Path) -> dict[str, Any]:
    """Counter and sampled energy of one finished job folder (on the machine that ran it: UUIDs to NVML indices)."""
    record = json.loads((run_dir / "job.json").read_text())
    counter = job_gpu_counter(record)
    indices = nvml_indices(counter.devices) if counter.devices else None
    window = (((record.get("info") or {}).get("energy") or {}).get("components") or {}).get("gpu") or {}
    return {
        "counter_j": counter.joules,
        "counter_source": counter.source,
        "devices": list(counter.devices),
        "nvml_indices": indices,
        "sampled_j": sampled_joules(run_dir / "resources.csv", indices),
        "window_gpu_j": window.get("joules"),
        "job_duration_s": record.get("duration_s"),
    }


def run_job(workdir: Path, timeout: float = JOB_TIMEOUT_S) -> dict[str, Any]:
    cwd = Path(tempfile.mkdtemp(prefix="gpu-", dir=workdir))
    run_dir = cwd / "run"
    elapsed, _ = timed_run([sys.executable, str(MAIN), *GPU_JOB, f"hydra.run.dir={run_dir}"], cwd=cwd, timeout=timeout)
    return {**compare(run_dir), "job_s": elapsed, "job_dir": str(run_dir)}


def measure(workdir: Path, jobs: int, timeout: float = JOB_TIMEOUT_S) -> BenchResult:
    """``jobs`` GPU jobs one after another, each compared (NVML must be there: ``run`` checks)."""
    start = time.perf_counter()
    results = [run_job(workdir, timeout) for _ in range(jobs)]
    if any(j["counter_source"] == "sampled" for j in results):
        why = "the GPU has no energy counter: the job's own GPU energy is sampled, nothing to compare"
        return BenchResult(ID, TITLE, [skipped(ID, "GPU energy, sampled vs counter", why)], raw={"jobs": results})
    gaps = [100.0 * abs(j["sampled_j"] / j["counter_j"] - 1.0) for j in results]
    spread = Spread.of(gaps)
    counter = Spread.of([j["counter_j"] for j in results]).median
    sampled = Spread.of([j["sampled_j"] for j in results]).median
    devices = len(results[0]["devices"]) or "all"
    rows = [
        Row(
            ID,
            "GPU energy, sampled vs counter: |difference|",
            spread.median,
            "%",
            TARGET,
            spread.min,
            spread.max,
            detail=f"counter {counter:.0f} J, sampled {sampled:.0f} J per job (median of {len(results)}); "
            f"GPUs: {devices}",
        )
    ]
    return BenchResult(
        ID,
        TITLE,
        rows,
        settings={"job": list(GPU_JOB), "jobs": len(results), "timeout_s": timeout},
        raw={"jobs": results, "difference_percent": gaps},
        stats={"difference_percent": spread},
        wall_s=time.perf_counter() - start,
    )


def run(ctx: Context) -> BenchResult:
    why = nvml_unavailable()
    if why is not None:
        return BenchResult(ID, TITLE, [skipped(ID, "GPU energy, sampled vs counter", why)])
    return measure(ctx.scratch(ID), ctx.n(3))
