"""B10: ``explaunch status`` on a 1000-job sweep within 1 s; a detached SLURM sweep returns within 2x the time a plain
``sbatch --array`` of the same size takes to be submitted (issue 22).

- status: ``explaunch status SWEEP_DIR`` (and ``--json``) timed whole, process start to exit, through the
  ``explaunch`` console script, on the folder of a real finished sweep of 1000 probe jobs (``python main.py -m
  experiment_type=probe experiment_type.duration_s=0 seed=range(0,1000) tracking=none``, about a minute on 2 cores),
  run once first.
- detach: ``python main.py -m hydra/launcher=submitit_slurm hydra.sweeper.detach=true experiment_type=probe
  seed=range(0,N)`` (the default tracking: MLflow's sqlite store in the folder it runs from, made once by an untimed
  warm-up run) until the command returns, against ``sbatch --parsable --array=0-(N-1) job.sh`` (no ``--wait``) of a
  script asking for the resources the launcher asks for by default (1 CPU, 4 GB, 60 min), until it returns; N = 16
  and 100, side by side in alternating order. After each: the detached sweep is cancelled (``explaunch cancel``),
  what either submitted is ``scancel``-ed, and the next run waits until the SLURM queue is empty. Needs SLURM
  (``make slurm-up``): without it (``sinfo`` fails) these rows are skipped, saying so.

Opt-in: ``python -m benchmarks --only B10``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.b5_cli_speed import explaunch_command
from benchmarks.harness import (
    BenchResult,
    Context,
    Row,
    Spread,
    Target,
    main_py,
    paired_ratios,
    skipped,
    timed_run,
)

ID = "B10"
TITLE = "explaunch status on a 1000-job sweep; detach on SLURM against plain sbatch --array"
JOBS = 1000
SWEEP = ("experiment_type=probe", "experiment_type.duration_s=0", "tracking=none")
TARGET_STATUS = Target("<=", 1.0)
TARGET_DETACH = Target("<=", 2.0)
SLURM_SIZES = (16, 100)
SLURM_TIMEOUT_S = 15.0
QUEUE_EMPTY_TIMEOUT_S = 300.0
CANCEL_WAIT_S = 60
# what hydra/launcher=submitit_slurm asks for by default: 1 task of 1 CPU, 4 GB, 60 min
ARRAY_SCRIPT = """#!/bin/bash
#SBATCH --job-name=b10-sbatch-array
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=1
#SBATCH --mem=4G
#SBATCH --time=60
#SBATCH --output={folder}/%A_%a.out
{python} -c "import time; time.sleep(0.2)"
"""


# ---- explaunch status on a 1000-job sweep ---------------------------------------------------------------------
def make_sweep(workdir: Path) -> tuple[Path, float]:
    """A finished sweep of :data:`JOBS` probe jobs, and how long it took."""
    sweep = workdir / "sweep"
    seconds, _ = timed_run(
        main_py(*SWEEP, f"seed=range(0,{JOBS})", f"hydra.sweep.dir={sweep}"), cwd=workdir, timeout=1800
    )
    return sweep, seconds


def check_status(cli: list[str], sweep: Path, workdir: Path) -> dict[str, Any]:
    """``explaunch status --json`` of the sweep, checked: every job completed."""
    _, done = timed_run([*cli, "status", str(sweep), "--json"], cwd=workdir)
    status: dict[str, Any] = json.loads(done.stdout)
    if status["total"] != JOBS or status["counts"]["completed"] != JOBS:
        raise RuntimeError(f"explaunch status: {status['total']} jobs, counts {status['counts']}; expected {JOBS}")
    return status


def time_status(ctx: Context, workdir: Path) -> tuple[list[Row], dict[str, Any], dict[str, Spread]]:
    sweep, sweep_s = make_sweep(workdir)
    cli = explaunch_command()
    check_status(cli, sweep, workdir)  # also the untimed first run (the page cache)
    times: dict[str, list[float]] = {"table": [], "json": []}
    loads: list[float] = []
    for repeat in range(ctx.n(9)):
        order = ("table", "json") if repeat % 2 == 0 else ("json", "table")
        for variant in order:
            loads.append(os.getloadavg()[0])
            extra = ["--json"] if variant == "json" else []
            times[variant].append(timed_run([*cli, "status", str(sweep), *extra], cwd=workdir)[0])
    stats = {f"status_{variant}": Spread.of(values) for variant, values in times.items()}
    load = f"load (1 min) {min(loads):.1f} .. {max(loads):.1f} on {os.cpu_count()} cores"
    rows = [
        Row(
            ID,
            f"explaunch status{' --json' if variant == 'json' else ''}, {JOBS}-job sweep",
            stats[f"status_{variant}"].median,
            "s",
            TARGET_STATUS,
            stats[f"status_{variant}"].min,
            stats[f"status_{variant}"].max,
            detail=f"whole command; {len(times[variant])} runs; {load}",
        )
        for variant in ("table", "json")
    ]
    return rows, {"sweep_s": sweep_s, "status_s": times, "status_load_1min": loads}, stats


# ---- detach against sbatch --array ----------------------------------------------------------------------------
def slurm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args), capture_output=True, text=True, timeout=SLURM_TIMEOUT_S, stdin=subprocess.DEVNULL, check=False
    )


def slurm_unavailable() -> str | None:
    """Why SLURM cannot be used here (None when ``sinfo`` answers and ``sbatch`` is there)."""
    missing = [tool for tool in ("sinfo", "sbatch", "squeue", "scancel") if shutil.which(tool) is None]
    if missing:
        return f"no {', '.join(missing)} on PATH (make slurm-up starts a local cluster)"
    try:
        done = slurm("sinfo", "-h")
    except (OSError, subprocess.TimeoutExpired) as ex:
        return f"sinfo fails: {ex}"
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1].removeprefix("sinfo: ")
        return f"sinfo fails: {why} (make slurm-up starts a local cluster)"
    return None


def submitted_job_id(stdout: str) -> str:
    """The job id ``sbatch --parsable`` prints: ``123`` or ``123;cluster``."""
    job_id = stdout.strip().split(";")[0]
    if not job_id.isdigit():
        raise RuntimeError(f"sbatch --parsable printed {stdout.strip()!r}, not a job id")
    return job_id


def queue() -> list[str]:
    done = slurm("squeue", "-h", "-o", "%i %T")
    if done.returncode != 0:
        raise RuntimeError(f"squeue fails: {done.stderr.strip()}")
    return [line for line in done.stdout.splitlines() if line.strip()]


def wait_for_empty_queue(timeout: float = QUEUE_EMPTY_TIMEOUT_S) -> float:
    """Wait until SLURM's queue is empty; the seconds waited."""
    start = time.monotonic()
    while left := queue():
        if time.monotonic() - start > timeout:
            raise RuntimeError(f"SLURM queue not empty after {timeout:g} s: {', '.join(left[:5])}")
        time.sleep(0.5)
    return time.monotonic() - start


def cancel_detached(sweep: Path, cwd: Path) -> None:
    """Stop what a detached sweep started: ``explaunch cancel``, then ``scancel`` of its controller's job and of
    the job arrays it submitted, whatever the cancel left."""
    from explaunch.launch.controller_state import Controller, slurm_jobs_of

    controller = Controller.read(sweep)
    if controller is None:
        return
    subprocess.run(
        [*explaunch_command(), "cancel", str(sweep), "--wait", str(CANCEL_WAIT_S)],
        cwd=cwd,
        capture_output=True,
        timeout=CANCEL_WAIT_S + 60,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    leftovers = [job for job in (controller.slurm_job_id, *slurm_jobs_of(sweep)) if job]
    if leftovers:
        slurm("scancel", *leftovers)


def detach_once(jobs: int, cwd: Path, folder: Path) -> float:
    """Seconds until ``python main.py -m ... hydra.sweeper.detach=true`` returns; then the sweep is cancelled."""
    sweep = folder / "sweep"
    overrides = ("hydra/launcher=submitit_slurm", "hydra.sweeper.detach=true", "experiment_type=probe")
    try:
        seconds, _ = timed_run(main_py(*overrides, f"seed=range(0,{jobs})", f"hydra.sweep.dir={sweep}"), cwd=cwd)
    finally:
        cancel_detached(sweep, cwd)
    return seconds


def sbatch_once(jobs: int, folder: Path) -> float:
    """Seconds until ``sbatch --array=0-(jobs-1)`` returns; then the array is cancelled."""
    script = folder / "job.sh"
    script.write_text(ARRAY_SCRIPT.format(folder=folder, python=sys.executable))
    seconds, done = timed_run(["sbatch", "--parsable", f"--array=0-{jobs - 1}", str(script)], cwd=folder)
    slurm("scancel", submitted_job_id(done.stdout))
    return seconds


def time_detach(ctx: Context, workdir: Path) -> tuple[list[Row], dict[str, Any], dict[str, Spread]]:
    why = slurm_unavailable()
    if why is not None:
        label = "{} jobs: detach returns / sbatch --array returns"
        return [skipped(ID, label.format(jobs), f"no SLURM: {why}") for jobs in SLURM_SIZES], {"slurm": why}, {}
    cwd = ctx.scratch(f"{ID}/slurm")  # where the detached sweeps run from: one MLflow store for all
    runs = 0

    def fresh(name: str) -> Path:
        nonlocal runs
        runs += 1
        folder = cwd / f"{runs:03d}-{name}"
        folder.mkdir()
        return folder

    wait_for_empty_queue()
    detach_once(SLURM_SIZES[0], cwd, fresh("warm-up-detach"))  # makes the MLflow store; not timed
    wait_for_empty_queue()
    sbatch_once(SLURM_SIZES[0], fresh("warm-up-sbatch"))
    rows: list[Row] = []
    raw: dict[str, Any] = {}
    stats: dict[str, Spread] = {}
    for jobs in SLURM_SIZES:
        times: dict[str, list[float]] = {"detach": [], "sbatch": []}
        loads: list[float] = []
        for repeat in range(ctx.n(4)):
            order = ("sbatch", "detach") if repeat % 2 == 0 else ("detach", "sbatch")  # drift hits both
            for variant in order:
                wait_for_empty_queue()
                loads.append(os.getloadavg()[0])
                folder = fresh(f"{variant}-{jobs}")
                seconds = detach_once(jobs, cwd, folder) if variant == "detach" else sbatch_once(jobs, folder)
                times[variant].append(seconds)
        ratios = paired_ratios(times["detach"], times["sbatch"])
        spreads = {variant: Spread.of(values) for variant, values in times.items()}
        stats.update({f"{variant}_{jobs}": spread for variant, spread in spreads.items()})
        stats[f"ratio_{jobs}"] = Spread.of(ratios)
        raw[f"slurm_{jobs}"] = {**times, "ratio": ratios, "load_1min": loads}
        rows.append(
            Row(
                ID,
                f"{jobs} jobs: detach returns / sbatch --array returns",
                stats[f"ratio_{jobs}"].median,
                "x",
                TARGET_DETACH,
                min(ratios),
                max(ratios),
                detail=f"{spreads['detach'].median:.2f} s vs {spreads['sbatch'].median:.3f} s; "
                f"{len(ratios)} runs each, alternating order; load (1 min) {min(loads):.1f} .. {max(loads):.1f}",
            )
        )
    wait_for_empty_queue()
    return rows, raw, stats


def run(ctx: Context) -> BenchResult:
    workdir = ctx.scratch(ID)
    start = time.perf_counter()
    rows, raw, stats = time_status(ctx, workdir)
    detach_rows, detach_raw, detach_stats = time_detach(ctx, workdir)
    rows += detach_rows
    raw.update(detach_raw)
    stats.update(detach_stats)
    return BenchResult(
        ID,
        TITLE,
        rows,
        settings={
            "jobs": JOBS,
            "sweep": f"python main.py -m {' '.join(SWEEP)} seed=range(0,{JOBS})",
            "status_command": [*explaunch_command(), "status", "SWEEP_DIR", "[--json]"],
            "slurm_sizes": list(SLURM_SIZES),
            "detach": "python main.py -m hydra/launcher=submitit_slurm hydra.sweeper.detach=true "
            "experiment_type=probe seed=range(0,N) hydra.sweep.dir=...",
            "sbatch": "sbatch --parsable --array=0-(N-1) job.sh",
            "array_script": ARRAY_SCRIPT,
            "cpu_count": os.cpu_count(),
        },
        raw=raw,
        stats=stats,
        notes=[
            "status: whole command (process start to exit), table and --json alternating; a finished sweep",
            "detach / sbatch: whole command until it returns, side by side in alternating order; ratio = median of "
            "the per-repeat ratios; each detached sweep cancelled (explaunch cancel) and every job scancel-ed, and "
            "the SLURM queue empty before each timed command",
            "load_1min: the machine's 1-minute load average before each timed command",
        ],
        wall_s=time.perf_counter() - start,
    )
