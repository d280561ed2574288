"""B7 (NVIDIA GPUs only): a GPU job's energy from NVML power sampling against the GPU's total-energy counter.

The job (an LLM job on the GPU, all recording on) records both: the resource sampler's ``gpu<i>_power_w`` every
``resources.interval_s`` in ``resources.csv`` (sampling), integrated here over ``elapsed_s`` with the trapezoid
rule, and ``job_gpu_energy_joules_nvml``, the difference of ``nvmlDeviceGetTotalEnergyConsumption`` over the job (a
meter). The target: they agree within 2 %. codecarbon's own ``job_energy_gpu_kwh`` is shown beside.

Without NVML (no NVIDIA GPU, or no driver) the benchmark is skipped, which is not a failure.
"""

from __future__ import annotations

import csv
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import MAIN, BenchResult, Context, Row, Spread, Target, skipped, timed_run

ID = "B7"
TITLE = "GPU job energy: NVML power sampling vs the total-energy counter"
TARGET = Target("<=", 2.0)
JOULES_PER_KWH = 3.6e6
GPU_JOB = (
    "hardware=gpu",
    "model.hidden_size=1024",
    "model.intermediate_size=2816",
    "model.num_hidden_layers=8",
    "model.num_attention_heads=16",
    "model.num_key_value_heads=4",
    "batch=32",
    "batching.num_prompts=512",
    "batching.max_new_tokens=128",
    "experiment_type.flops=none",
    "tracking=none",
)


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


def sampled_joules(resources_csv: Path) -> float:
    """Trapezoid integral of the summed ``gpu<i>_power_w`` columns over ``elapsed_s``."""
    with resources_csv.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    columns = [c for c in (rows[0] if rows else {}) if c.startswith("gpu") and c.endswith("_power_w")]
    if len(rows) < 2 or not columns:
        raise RuntimeError(f"{resources_csv}: fewer than 2 samples or no GPU power column")
    points = [(float(r["elapsed_s"]), sum(float(r[c]) for c in columns)) for r in rows]
    return sum((t1 - t0) * (p0 + p1) / 2 for (t0, p0), (t1, p1) in itertools.pairwise(points))


def run_job(workdir: Path) -> dict[str, float]:
    cwd = Path(tempfile.mkdtemp(prefix="gpu-", dir=workdir))
    run_dir = cwd / "run"
    elapsed, _ = timed_run([sys.executable, str(MAIN), *GPU_JOB, f"hydra.run.dir={run_dir}"], cwd=cwd)
    metrics = json.loads((run_dir / "job.json").read_text())["metrics"]
    if "job_gpu_energy_joules_nvml" not in metrics:
        raise RuntimeError("the job recorded no NVML energy counter (job_gpu_energy_joules_nvml)")
    return {
        "counter_j": float(metrics["job_gpu_energy_joules_nvml"]),
        "sampled_j": sampled_joules(run_dir / "resources.csv"),
        "codecarbon_j": float(metrics.get("job_energy_gpu_kwh", 0.0)) * JOULES_PER_KWH,
        "job_s": elapsed,
    }


def run(ctx: Context) -> BenchResult:
    why = nvml_unavailable()
    if why is not None:
        return BenchResult(ID, TITLE, [skipped(ID, "GPU energy, sampled vs counter", why)])
    start = time.perf_counter()
    jobs = [run_job(ctx.scratch(ID)) for _ in range(ctx.n(3))]
    gaps = [100.0 * abs(j["sampled_j"] / j["counter_j"] - 1.0) for j in jobs]
    spread = Spread.of(gaps)
    counter = Spread.of([j["counter_j"] for j in jobs]).median
    codecarbon = Spread.of([j["codecarbon_j"] for j in jobs]).median
    rows = [
        Row(
            ID,
            "GPU energy, sampled vs counter: |difference|",
            spread.median,
            "%",
            TARGET,
            spread.min,
            spread.max,
            detail=f"counter {counter:.0f} J per job; codecarbon {codecarbon:.0f} J ({codecarbon / counter:.3f})",
        )
    ]
    return BenchResult(
        ID,
        TITLE,
        rows,
        settings={"job": list(GPU_JOB), "jobs": len(jobs)},
        raw={"jobs": jobs, "difference_percent": gaps},
        stats={"difference_percent": spread},
        wall_s=time.perf_counter() - start,
    )
