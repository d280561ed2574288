"""B4: re-running a finished 64-job probe sweep (the same command, the same ``hydra.sweep.dir``, from the same folder)
runs no job and returns within 2 s.

The sweep runs once on the default launcher with all recording on (not timed for the target; its time is shown);
then the same command is timed, whole process, ``repeats`` times. A re-run counts as having run no job when the
ledger gained no line, no ``job.json`` changed, and the sweeper's summary says 0 completed and 64 skipped.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from benchmarks.harness import BenchResult, Context, Row, Spread, Target, main_py, timed_run

ID = "B4"
TITLE = "re-run of a finished 64-job sweep (resume)"
JOBS = 64
TARGET_S = Target("<=", 2.0)
TARGET_JOBS = Target("<=", 0.0)
SUMMARY = re.compile(r"(\d+) completed, (\d+) not completed, (\d+) skipped")


def sweep_state(sweep_dir: Path) -> tuple[int, dict[str, float]]:
    """Ledger lines and the job records' modification times."""
    ledger = sweep_dir / "ledger.jsonl"
    lines = len(ledger.read_text().splitlines()) if ledger.exists() else 0
    return lines, {str(p): p.stat().st_mtime for p in sweep_dir.glob("*/job.json")}


def summary_counts(output: str) -> tuple[int, int, int]:
    """(completed, not completed, skipped) from the sweeper's last summary line."""
    found = SUMMARY.findall(output)
    if not found:
        raise RuntimeError("the sweep printed no summary line ('N completed, N not completed, N skipped')")
    completed, bad, skipped = found[-1]
    return int(completed), int(bad), int(skipped)


def run(ctx: Context) -> BenchResult:
    repeats = ctx.n(3)
    cwd = ctx.scratch(ID)
    sweep_dir = cwd / "sweep"
    cmd = main_py(
        "experiment_type=probe", "experiment_type.duration_s=0", f"seed=range(0,{JOBS})", f"hydra.sweep.dir={sweep_dir}"
    )
    start = time.perf_counter()
    first_s, _ = timed_run(cmd, cwd=cwd)
    lines, mtimes = sweep_state(sweep_dir)
    if lines != JOBS or len(mtimes) != JOBS:
        raise RuntimeError(f"the first run left {len(mtimes)} job records and {lines} ledger lines, not {JOBS}")
    timings, jobs_run, summaries = [], [], []
    for _ in range(repeats):
        elapsed, done = timed_run(cmd, cwd=cwd)
        now_lines, now_mtimes = sweep_state(sweep_dir)
        changed = sum(1 for path, mtime in now_mtimes.items() if mtimes.get(path) != mtime)
        counts = summary_counts(done.stdout + done.stderr)
        timings.append(elapsed)
        jobs_run.append(max(now_lines - lines, changed, counts[0] + counts[1], JOBS - counts[2]))
        summaries.append(list(counts))
        lines, mtimes = now_lines, now_mtimes
    spread = Spread.of(timings)
    rows = [
        Row(
            ID,
            "re-run of a finished 64-job sweep: wall time",
            spread.median,
            "s",
            TARGET_S,
            spread.min,
            spread.max,
            detail=f"whole command; the first run took {first_s:.1f} s",
        ),
        Row(
            ID,
            "re-run: jobs run again",
            float(max(jobs_run)),
            "jobs",
            TARGET_JOBS,
            detail="ledger lines, job.json changes and the sweeper's summary (completed, not completed, skipped): "
            + ", ".join(str(tuple(s)) for s in summaries),
        ),
    ]
    return BenchResult(
        ID,
        TITLE,
        rows,
        settings={"jobs": JOBS, "repeats": repeats, "command": cmd[1:]},
        raw={"first_run_s": first_s, "rerun_s": timings, "jobs_run": jobs_run, "summaries": summaries},
        stats={"rerun": spread},
        wall_s=time.perf_counter() - start,
    )
