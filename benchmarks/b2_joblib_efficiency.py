"""B2: 16 jobs of 0.5 s sleep on 2 workers (explaunch's launcher, the default for ``-m``), recording on: efficiency =
ideal 16 x 0.5 / 2 = 4 s over the measured time.

Two wall times, both reported:

- job phase (the target): from the earliest ``start_time`` to the latest ``end_time`` of the sweep's job records
  (``job.json``, millisecond resolution). It covers the jobs and the launcher between them (worker pool start-up,
  per-job composition, recording at job start and end), not the parent's start (Python and Hydra imports, sweep
  set-up) nor what it does after the last job (sweep summary, MLflow's sweep run).
- whole process: the ``python main.py -m ...`` command from process start to exit, what a user waits for.

Plain Hydra (stock sweeper, Hydra's joblib launcher with 2 workers, no callbacks, ``tracking=none``) runs
interleaved for reference; it writes no records, so its job phase is taken from file times: the first job's
``.hydra/config.yaml`` (written just before the task runs) to the last job's ``probe_attempts`` (written when the task
starts) plus the 0.5 s it then sleeps.
"""

from __future__ import annotations

import json
import tempfile
import time
from datetime import datetime
from pathlib import Path

from benchmarks.harness import BenchResult, Context, Row, Spread, Target, main_py, timed_run

ID = "B2"
TITLE = "16 x 0.5 s jobs, 2 workers (explaunch_local; plain Hydra on joblib): efficiency vs ideal 4 s"
JOBS, SLEEP_S, WORKERS = 16, 0.5, 2
IDEAL_S = JOBS * SLEEP_S / WORKERS
TARGET = Target(">=", 85.0)
COMMON = (
    "experiment_type=probe",
    f"experiment_type.duration_s={SLEEP_S}",
    f"seed=range(0,{JOBS})",
    f"hydra.launcher.n_jobs={WORKERS}",
)
OURS = ("hydra/launcher=explaunch_local",)
PLAIN = (
    "hydra/sweeper=basic",
    "hydra/launcher=joblib",
    "~hydra.callbacks.recording",
    "~hydra.callbacks.job_guard",
    "tracking=none",
)


def record_phase_s(sweep_dir: Path) -> float:
    """First job start to last job end, from the job records."""
    starts, ends = [], []
    for path in sweep_dir.glob("*/job.json"):
        record = json.loads(path.read_text())
        if record["status"] != "completed":
            raise RuntimeError(f"{path}: job {record['status']}")
        starts.append(datetime.fromisoformat(record["start_time"]))
        ends.append(datetime.fromisoformat(record["end_time"]))
    if len(starts) != JOBS:
        raise RuntimeError(f"{len(starts)} of {JOBS} job records in {sweep_dir}")
    return (max(ends) - min(starts)).total_seconds()


def file_phase_s(sweep_dir: Path) -> float:
    """Plain Hydra's job phase from file times (it writes no record): see the module's docstring."""
    configs = [p.stat().st_mtime for p in sweep_dir.glob("*/.hydra/config.yaml")]
    started = [p.stat().st_mtime for p in sweep_dir.glob("*/probe_attempts")]
    if len(configs) != JOBS or len(started) != JOBS:
        raise RuntimeError(f"plain Hydra: {len(started)} of {JOBS} jobs ran in {sweep_dir}")
    return max(started) + SLEEP_S - min(configs)


def run_variant(plain: bool, workdir: Path) -> tuple[float, float]:
    """(whole process, job phase) in seconds."""
    cwd = Path(tempfile.mkdtemp(prefix="plain-" if plain else "explaunch-", dir=workdir))
    sweep_dir = cwd / "sweep"
    extra = PLAIN if plain else OURS
    elapsed, _ = timed_run(main_py(*COMMON, *extra, f"hydra.sweep.dir={sweep_dir}"), cwd=cwd)
    return elapsed, file_phase_s(sweep_dir) if plain else record_phase_s(sweep_dir)


def efficiency(seconds: float) -> float:
    return 100.0 * IDEAL_S / seconds


def run(ctx: Context) -> BenchResult:
    repeats = ctx.n(3)
    workdir = ctx.scratch(ID)
    raw: dict[str, list[float]] = {"explaunch_process": [], "explaunch_jobs": [], "plain_process": [], "plain_jobs": []}
    start = time.perf_counter()
    for _ in range(repeats):
        for plain in (True, False):
            whole, phase = run_variant(plain, workdir)
            name = "plain" if plain else "explaunch"
            raw[f"{name}_process"].append(whole)
            raw[f"{name}_jobs"].append(phase)
    stats = {name: Spread.of(values) for name, values in raw.items()}

    def row(label: str, name: str, target: Target | None) -> Row:
        s = stats[name]  # a longer time is a lower efficiency: the spread's ends swap
        return Row(
            ID,
            label,
            efficiency(s.median),
            "%",
            target,
            efficiency(s.max),
            efficiency(s.min),
            detail=f"{s.median:.2f} s for an ideal {IDEAL_S:g} s",
        )

    rows = [
        row("efficiency, job phase (records)", "explaunch_jobs", TARGET),
        row("efficiency, whole process", "explaunch_process", None),
        row("plain Hydra joblib, job phase (file times)", "plain_jobs", None),
        row("plain Hydra joblib, whole process", "plain_process", None),
    ]
    return BenchResult(
        ID,
        TITLE,
        rows,
        settings={"jobs": JOBS, "sleep_s": SLEEP_S, "workers": WORKERS, "ideal_s": IDEAL_S, "repeats": repeats},
        raw={"wall_s": raw},
        stats=stats,
        notes=[(__doc__ or "").split("\n\n", 1)[1].strip()],
        wall_s=time.perf_counter() - start,
    )
