"""B8: how repeatable a job's figures are: one sweep of 5 identical LLM jobs, run one after another.

The jobs differ only in ``+params.repeat=0..4`` (a free knob no experiment reads, so the sweeper sees five jobs and
each gets a folder of its own), on the basic launcher so that no job runs beside another, with ``tracking=none``.
Each job's ``job.json`` gives its tokens/s over the whole measured window (``throughput_e2e_tokens_per_s``: output
tokens over the generate time, prefill included), its energy per output token and the window's length. The figure
is the coefficient of variation (sample standard deviation over the mean) across the jobs: the target holds tokens/s
within 5 %; energy per token is reported without a target (on a machine without energy counters it is modelled from
the CPU load, see the README). ``--quick`` does not shorten it: fewer than 5 jobs say little about a spread;
``--repeats N`` runs N jobs (at least 2).
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.harness import BenchResult, Context, Row, Spread, Target, main_py, timed_run

ID = "B8"
TITLE = "repeatability: identical LLM jobs one after another, coefficient of variation"
JOBS = 5
TARGET = Target("<=", 5.0)
JOB_TIMEOUT_S = 120.0  # per job, on 2 CPU cores; the sweep's limit is this times the jobs
OVERRIDES = (
    "model=llama",
    "batch=8",
    "experiment_type.flops=none",  # an untimed pass after the window: it changes no figure here, only the job's length
    "tracking=none",
    "hydra/launcher=basic",
)
REQUIRED = ("throughput_e2e_tokens_per_s", "energy_per_output_token_j", "energy_window_s")
FIGURES = (
    *REQUIRED,
    "throughput_decode_tokens_per_s",
    "energy_iterations",
    "energy_joules",
    "output_tokens",
)


def coefficient_of_variation(values: Sequence[float]) -> float:
    """Sample standard deviation over the mean, in percent."""
    if len(values) < 2:
        raise ValueError(f"a coefficient of variation needs at least 2 values, got {len(values)}")
    mean = statistics.fmean(values)
    if mean == 0:
        raise ValueError("a coefficient of variation of values whose mean is 0")
    return 100.0 * statistics.stdev(values) / abs(mean)


def _job_number(path: Path) -> tuple[int, str]:
    name = path.parent.name
    return (int(name), name) if name.isdigit() else (-1, name)


def read_records(sweep_dir: Path, jobs: int) -> list[dict[str, Any]]:
    """The sweep's job records in job order; raises unless there are ``jobs`` of them, all completed."""
    paths = sorted(sweep_dir.glob("*/job.json"), key=_job_number)
    records = [json.loads(path.read_text()) for path in paths]
    not_completed = [
        f"{p.parent.name}: {r.get('status')}"
        for p, r in zip(paths, records, strict=True)
        if r.get("status") != "completed"
    ]
    if len(records) != jobs or not_completed:
        raise RuntimeError(
            f"{len(records)} of {jobs} job records in {sweep_dir}"
            + (f"; not completed: {', '.join(not_completed)}" if not_completed else "")
        )
    return records


def other_load_cores(machine_percent: float | None, job_percent: float | None, cores: int) -> float | None:
    """Cores that other processes kept busy during a job, from two means of its ``resources.csv``: the machine's
    CPU (100 = every core busy) and the job's process tree (100 = one core). On a shared machine this, not the
    job, is what makes identical jobs differ."""
    if machine_percent is None or job_percent is None:
        return None
    return max(0.0, machine_percent / 100 * cores - job_percent / 100)


def job_figures(record: Mapping[str, Any], cores: int) -> dict[str, Any]:
    """One job's figures (``cores``: the machine's); raises when the record lacks one this benchmark is about (an
    older record format)."""
    metrics = record.get("metrics") or {}
    missing = [name for name in REQUIRED if name not in metrics]
    if missing:
        raise RuntimeError(f"job {record.get('job_num')}: no {', '.join(missing)} in its metrics")
    info = record.get("info") or {}
    energy = info.get("energy") or {}
    return {
        "job_num": record.get("job_num"),
        "overrides": record.get("overrides"),
        **{name: metrics.get(name) for name in FIGURES},
        "quality": energy.get("quality"),
        "quality_reasons": energy.get("quality_reasons", []),
        "device": info.get("device"),
        "machine_cpu_percent_mean": metrics.get("resources_mean_system_cpu_percent"),
        "job_cpu_percent_mean": metrics.get("resources_mean_cpu_percent"),
        "other_load_cores": other_load_cores(
            metrics.get("resources_mean_system_cpu_percent"), metrics.get("resources_mean_cpu_percent"), cores
        ),
        "output_sha256": info.get("output_sha256"),
        "duration_s": record.get("duration_s"),
    }


def summarize_jobs(jobs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The coefficients of variation, the mean window and what the jobs had in common."""
    tps = [float(j["throughput_e2e_tokens_per_s"]) for j in jobs]
    per_token = [float(j["energy_per_output_token_j"]) for j in jobs]
    windows = [float(j["energy_window_s"]) for j in jobs]
    iterations = [float(j["energy_iterations"]) for j in jobs if j.get("energy_iterations") is not None]
    low_quality = [f"{j['job_num']}: {'; '.join(j['quality_reasons']) or 'low'}" for j in jobs if j["quality"] == "low"]
    return {
        "cv_throughput_e2e_percent": coefficient_of_variation(tps),
        "cv_energy_per_output_token_percent": coefficient_of_variation(per_token),
        "throughput_e2e_tokens_per_s": {"mean": statistics.fmean(tps), "min": min(tps), "max": max(tps)},
        "energy_per_output_token_j": {
            "mean": statistics.fmean(per_token),
            "min": min(per_token),
            "max": max(per_token),
        },
        "energy_window_s": {"mean": statistics.fmean(windows), "min": min(windows), "max": max(windows)},
        "energy_iterations_mean": statistics.fmean(iterations) if iterations else None,
        "same_outputs": len({j["output_sha256"] for j in jobs}) == 1,
        "other_load_cores": [j.get("other_load_cores") for j in jobs],
        "low_quality": low_quality,
    }


def rows_of(summary: Mapping[str, Any], jobs: int) -> list[Row]:
    tps, per_token, window = (
        summary["throughput_e2e_tokens_per_s"],
        summary["energy_per_output_token_j"],
        summary["energy_window_s"],
    )
    same = "same tokens in every job" if summary["same_outputs"] else "the jobs generated DIFFERENT tokens"
    quality = f"quality low in {len(summary['low_quality'])}" if summary["low_quality"] else "quality ok in all"
    iterations = summary["energy_iterations_mean"]
    others = [float(c) for c in summary["other_load_cores"] if c is not None]
    machine = f"; other processes kept up to {max(others):.1f} cores busy" if others else ""
    return [
        Row(
            ID,
            f"tokens/s (e2e), CV over {jobs} identical jobs",
            summary["cv_throughput_e2e_percent"],
            "%",
            TARGET,
            detail=f"mean {tps['mean']:.0f} tokens/s, {tps['min']:.0f} .. {tps['max']:.0f}; {same}{machine}",
        ),
        Row(
            ID,
            f"energy per output token, CV over {jobs} identical jobs",
            summary["cv_energy_per_output_token_percent"],
            "%",
            detail=f"mean {per_token['mean']:.3g} J/token, {per_token['min']:.3g} .. {per_token['max']:.3g}; {quality}",
        ),
        Row(
            ID,
            "measured window per job, mean",
            window["mean"],
            "s",
            low=window["min"],
            high=window["max"],
            detail=f"{iterations:.1f} generate calls on average" if iterations is not None else "",
        ),
    ]


REFERENCE = """
import json, sys, time
import torch
torch.set_num_threads(1)
a = torch.randn(256, 256)
rates = []
for _ in range(int(sys.argv[1])):
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < float(sys.argv[2]):
        for _ in range(20):
            a @ a
        n += 20
    rates.append(n / (time.perf_counter() - start))
print(json.dumps(rates))
"""


def machine_drift(chunks: int, chunk_s: float, cwd: Path) -> list[float]:
    """A fixed workload (256x256 matmuls on one thread), timed in ``chunks`` chunks of ``chunk_s`` right after the
    jobs: how much this machine's own speed moves over a span like theirs. On a shared VM a neighbour on the same
    physical core slows everything by a quarter for tens of seconds at a time; no job can be steadier than this."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", REFERENCE, str(chunks), str(chunk_s)],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
        timeout=chunks * chunk_s + 120,
    )
    rates: list[float] = json.loads(out.stdout)
    return rates


def run(ctx: Context) -> BenchResult:
    jobs = JOBS if ctx.repeats is None else max(2, ctx.repeats)
    cwd = Path(tempfile.mkdtemp(prefix="repeat-", dir=ctx.scratch(ID)))
    sweep_dir = cwd / "sweep"
    repeat = ",".join(str(i) for i in range(jobs))
    command = main_py(*OVERRIDES, f"+params.repeat={repeat}", f"hydra.sweep.dir={sweep_dir}")
    start = time.perf_counter()
    elapsed, _ = timed_run(command, cwd=cwd, timeout=JOB_TIMEOUT_S * jobs)
    cores = os.cpu_count() or 1
    figures = [job_figures(record, cores) for record in read_records(sweep_dir, jobs)]
    summary = summarize_jobs(figures)
    window_s = summary["energy_window_s"]["mean"]
    reference = machine_drift(jobs, window_s, cwd)
    drift = coefficient_of_variation(reference)
    summary["machine_drift_cv_percent"] = drift
    rows = rows_of(summary, jobs)
    rows.append(
        Row(
            ID,
            "this machine's own drift: a fixed matmul loop, CV",
            drift,
            "%",
            detail=f"{jobs} chunks of {window_s:.0f} s right after the jobs, {min(reference):.0f} .. "
            f"{max(reference):.0f} matmuls/s (no target: the floor under the CV above)",
        )
    )
    return BenchResult(
        ID,
        TITLE,
        rows,
        settings={"overrides": [*OVERRIDES, f"+params.repeat={repeat}"], "jobs": jobs, "cores": cores},
        raw={"jobs": figures, "summary": summary, "sweep_wall_s": elapsed, "reference_rates": reference},
        stats={
            name: Spread.of([float(j[name]) for j in figures])
            for name in ("throughput_e2e_tokens_per_s", "energy_per_output_token_j", "energy_window_s")
        },
        notes=[
            "CV = sample standard deviation / mean over the jobs, in %",
            "the jobs ran one after another (basic launcher), identical but for +params.repeat",
        ],
        wall_s=time.perf_counter() - start,
    )
