"""B1: wall time of a sweep of 32 no-op jobs, one at a time in the sweep's process, all recording on, against plain
Hydra on its basic launcher.

explaunch: the defaults (explaunch sweeper, recording and job-guard callbacks, MLflow's sqlite store created fresh in
the temp folder the command runs from, energy, resources, snapshot) on its own launcher with one worker
(``hydra/launcher=explaunch_local hydra.launcher.n_jobs=1``: the jobs run one after another in the sweep's process,
as on Hydra's basic launcher). Plain Hydra: the same command with Hydra's basic sweeper and basic launcher, no
callbacks, ``tracking=none``. Both are timed as a user would time them: the whole command, from process start to
exit. Two more variants: recording on but ``tracking=none`` (how much of the gap is MLflow), and explaunch on Hydra's
basic launcher (which composes every job again from its overrides).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from benchmarks.harness import BenchResult, Context, Row, Spread, Target, main_py, paired_ratios, timed_run

ID = "B1"
TITLE = "sweep of 32 no-op jobs, one at a time: explaunch (all recording) / plain Hydra (basic launcher)"
JOBS = 32
TARGET = Target("<=", 1.3)
COMMON = ("experiment_type=probe", "experiment_type.duration_s=0", f"seed=range(0,{JOBS})")
PLAIN = ("hydra/sweeper=basic", "hydra/launcher=basic", "~hydra.callbacks.recording", "~hydra.callbacks.job_guard")
OURS = ("hydra/launcher=explaunch_local", "hydra.launcher.n_jobs=1")  # one job at a time, in the sweep's process
VARIANTS: dict[str, tuple[str, ...]] = {
    "plain_hydra": (*PLAIN, "tracking=none"),
    "explaunch": OURS,
    "explaunch_tracking_none": (*OURS, "tracking=none"),
    "explaunch_on_hydra_basic": ("hydra/launcher=basic",),  # info: Hydra's launcher composes each job again
}


def count_jobs(sweep_dir: Path, variant: str) -> int:
    """Jobs that ran: explaunch's job records, or (plain Hydra) job folders with Hydra's config."""
    marker = ".hydra/config.yaml" if variant == "plain_hydra" else "job.json"
    return sum(1 for path in sweep_dir.glob(f"*/{marker}") if path.is_file())


def run_variant(variant: str, workdir: Path) -> float:
    cwd = Path(tempfile.mkdtemp(prefix=f"{variant}-", dir=workdir))
    sweep_dir = cwd / "sweep"
    elapsed, _ = timed_run(main_py(*COMMON, *VARIANTS[variant], f"hydra.sweep.dir={sweep_dir}"), cwd=cwd)
    ran = count_jobs(sweep_dir, variant)
    if ran != JOBS:
        raise RuntimeError(f"{variant}: {ran} of {JOBS} jobs left their files in {sweep_dir}")
    return elapsed


def run(ctx: Context) -> BenchResult:
    repeats = ctx.n(3)
    workdir = ctx.scratch(ID)
    timings: dict[str, list[float]] = {name: [] for name in VARIANTS}
    start = time.perf_counter()
    for _ in range(repeats):
        for name in VARIANTS:  # interleaved: drift and other load hit every variant alike
            timings[name].append(run_variant(name, workdir))
    stats = {name: Spread.of(values) for name, values in timings.items()}
    plain = stats["plain_hydra"].median
    ratios = paired_ratios(timings["explaunch"], timings["plain_hydra"])
    no_mlflow = stats["explaunch_tracking_none"].median
    on_basic = stats["explaunch_on_hydra_basic"].median
    rows = [
        Row(
            ID,
            "32 no-op jobs, all recording / plain Hydra",
            Spread.of(ratios).median,
            "x",
            TARGET,
            min(ratios),
            max(ratios),
            detail=f"{stats['explaunch'].median:.1f} s vs {plain:.1f} s; "
            f"per job +{(stats['explaunch'].median - plain) / JOBS:.3f} s; "
            f"tracking=none {no_mlflow:.1f} s ({no_mlflow / plain:.2f}x); "
            f"on Hydra's basic launcher {on_basic:.1f} s ({on_basic / plain:.2f}x)",
        )
    ]
    return BenchResult(
        ID,
        TITLE,
        rows,
        settings={"jobs": JOBS, "repeats": repeats, "overrides": list(COMMON), "variants": VARIANTS},
        raw={"wall_s": timings, "paired_ratios": ratios},
        stats=stats,
        notes=[
            "wall time = the whole `python main.py -m ...` command, process start to exit",
            "ratio = median over repeats of (explaunch / plain Hydra) taken side by side; spread = their min .. max",
        ],
        wall_s=time.perf_counter() - start,
    )
