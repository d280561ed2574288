"""B9: how long a sweep keeps the user waiting around its jobs, against a minimal plain Hydra app on the same launcher.

Two figures, at 32 and 512 no-op jobs, on the basic launcher and on joblib (default ``n_jobs``: every core):

- to the first job: from the command's start to the start of the first job's own code. Target: explaunch at most
  1.5x the plain app's (a ratio of runs taken side by side).
- after the last job: from the end of the last job's own code to the command's exit. Target: at most 1 s.

explaunch: ``python main.py -m experiment_type=probe experiment_type.duration_s=0 seed=range(0,N)`` with all its
recording (the defaults: explaunch sweeper, recording and job-guard callbacks, MLflow's sqlite store created fresh in
the temp folder the command runs from, energy, resources, snapshot). Plain app: a few lines written into a temp
folder (:data:`PLAIN_APP`), Hydra's basic sweeper, ``seed=range(0,N)``, the same ``hydra/launcher``.

One clock for all: the wall clock (``time.time()``). The command's start and exit are read here around
``Popen``/``wait`` (its output goes to files: a pipe would also wait for any process that keeps it open after the
command exited). The plain app's task writes ``time.time()`` at its first and last line. The probe job writes its
``probe_attempts`` file at its first line: the file's mtime (the kernel's coarse wall clock, a few ms at most behind)
is its start; its end is that plus the ``slept_s`` it records (microseconds with ``duration_s=0``). The job record's
own ``start_time``/``end_time`` (taken by the recording callback, around explaunch's per-job set-up and wrap-up) give
a second pair of figures, shown beside.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    BenchResult,
    CommandFailed,
    Context,
    Row,
    Spread,
    Target,
    main_py,
    paired_ratios,
    subprocess_env,
)

ID = "B9"
TITLE = "command start -> first job, last job -> exit: explaunch (all recording) / a plain Hydra app"
SIZES = (32, 512)
LAUNCHERS = ("basic", "joblib")
TARGET_START = Target("<=", 1.5)
TARGET_TAIL = Target("<=", 1.0)
TIMEOUT_S = 1800.0
TIMES_FILE = "job_times"  # what the plain app writes
PLAIN_APP = """import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path=".", config_name="config")
def main(cfg: DictConfig) -> None:
    started = time.time()
    folder = Path(HydraConfig.get().runtime.output_dir)
    (folder / "job_times").write_text(f"{started!r} {time.time()!r}\\n")


if __name__ == "__main__":
    main()
"""
PLAIN_CONFIG = "seed: 0\n"


def write_plain_app(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(PLAIN_CONFIG)
    app = folder / "app.py"
    app.write_text(PLAIN_APP)
    return app


def command(variant: str, app: Path, jobs: int, launcher: str, sweep_dir: Path) -> list[str]:
    sweep = (f"seed=range(0,{jobs})", f"hydra/launcher={launcher}", f"hydra.sweep.dir={sweep_dir}")
    if variant == "plain":
        return [sys.executable, str(app), "-m", *sweep]
    return main_py("experiment_type=probe", "experiment_type.duration_s=0", *sweep)


def run_command(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """Wall-clock times of the command's start and exit."""
    with (cwd / "stdout.txt").open("w") as out, (cwd / "stderr.txt").open("w") as err:
        started = time.time()
        proc = subprocess.Popen(cmd, cwd=cwd, env=subprocess_env(), stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        try:
            code = proc.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise CommandFailed(f"{' '.join(cmd[1:])[:160]}: still running after {TIMEOUT_S:g} s") from None
        exited = time.time()
    if code != 0:
        tail = " | ".join((cwd / "stderr.txt").read_text(errors="replace").strip().splitlines()[-3:])
        raise CommandFailed(f"exit {code}: {' '.join(cmd[1:])[:160]}: {tail}")
    return started, exited


def plain_jobs(sweep_dir: Path, jobs: int) -> list[tuple[float, float]]:
    """(start, end) of each job's task, as it wrote them."""
    files = list(sweep_dir.glob(f"*/{TIMES_FILE}"))
    if len(files) != jobs:
        raise RuntimeError(f"plain app: {len(files)} of {jobs} jobs left {TIMES_FILE} in {sweep_dir}")
    times = [tuple(float(v) for v in path.read_text().split()) for path in files]
    return [(t[0], t[1]) for t in times]


def explaunch_jobs(sweep_dir: Path, jobs: int) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """(start, end) of each probe job's own code, and of its job record (start_time, end_time)."""
    code, recorded = [], []
    for path in sweep_dir.glob("*/job.json"):
        record = json.loads(path.read_text())
        if record["status"] != "completed":
            raise RuntimeError(f"{path}: job {record['status']}")
        started = (path.parent / "probe_attempts").stat().st_mtime
        code.append((started, started + float(record["metrics"]["slept_s"])))
        recorded.append(
            (
                datetime.fromisoformat(record["start_time"]).timestamp(),
                datetime.fromisoformat(record["end_time"]).timestamp(),
            )
        )
    if len(code) != jobs:
        raise RuntimeError(f"explaunch: {len(code)} of {jobs} job records in {sweep_dir}")
    return code, recorded


def edges(started: float, exited: float, jobs: list[tuple[float, float]]) -> tuple[float, float]:
    """(command start -> first job start, last job end -> command exit), seconds."""
    return min(s for s, _ in jobs) - started, exited - max(e for _, e in jobs)


def run_variant(variant: str, app: Path, jobs: int, launcher: str, workdir: Path) -> dict[str, float]:
    cwd = Path(tempfile.mkdtemp(prefix=f"{variant}-{launcher}-{jobs}-", dir=workdir))
    sweep_dir = cwd / "sweep"
    load = os.getloadavg()[0]
    started, exited = run_command(command(variant, app, jobs, launcher, sweep_dir), cwd)
    out = {"wall_s": exited - started, "load_1min": load}
    if variant == "plain":
        out["to_first_s"], out["tail_s"] = edges(started, exited, plain_jobs(sweep_dir, jobs))
    else:
        code, recorded = explaunch_jobs(sweep_dir, jobs)
        out["to_first_s"], out["tail_s"] = edges(started, exited, code)
        out["record_to_first_s"], out["record_tail_s"] = edges(started, exited, recorded)
    return out


def rows_for(jobs: int, launcher: str, runs: dict[str, list[dict[str, float]]]) -> list[Row]:
    ours, plain = runs["explaunch"], runs["plain"]
    ratios = paired_ratios([r["to_first_s"] for r in ours], [r["to_first_s"] for r in plain])
    tails = [r["tail_s"] for r in ours]

    def median(values: list[dict[str, float]], key: str) -> float:
        return statistics.median(r[key] for r in values)

    loads = [r["load_1min"] for r in ours + plain]
    where = f"{launcher}, {jobs} jobs"
    return [
        Row(
            ID,
            f"{where}: command start -> first job, explaunch / plain app",
            Spread.of(ratios).median,
            "x",
            TARGET_START,
            min(ratios),
            max(ratios),
            detail=f"{median(ours, 'to_first_s'):.2f} s vs {median(plain, 'to_first_s'):.2f} s; "
            f"to the job record's start_time {median(ours, 'record_to_first_s'):.2f} s; "
            f"whole command {median(ours, 'wall_s'):.1f} s vs {median(plain, 'wall_s'):.1f} s",
        ),
        Row(
            ID,
            f"{where}: last job end -> command exit, explaunch",
            Spread.of(tails).median,
            "s",
            TARGET_TAIL,
            min(tails),
            max(tails),
            detail=f"plain app {median(plain, 'tail_s'):.2f} s; from the job record's end_time "
            f"{median(ours, 'record_tail_s'):.2f} s; load (1 min) {min(loads):.1f} .. {max(loads):.1f}",
        ),
    ]


def run(ctx: Context) -> BenchResult:
    workdir = ctx.scratch(ID)
    app = write_plain_app(workdir / "plain_app")
    start = time.perf_counter()
    raw: dict[str, Any] = {}
    rows: list[Row] = []
    stats: dict[str, Spread] = {}
    repeats = {32: ctx.n(3), 512: ctx.n(1)}
    for jobs in SIZES:
        for launcher in LAUNCHERS:
            runs: dict[str, list[dict[str, float]]] = {"explaunch": [], "plain": []}
            for repeat in range(repeats[jobs]):
                order = ("plain", "explaunch") if repeat % 2 == 0 else ("explaunch", "plain")  # drift hits both
                for variant in order:
                    runs[variant].append(run_variant(variant, app, jobs, launcher, workdir))
            raw[f"{launcher}_{jobs}"] = runs
            rows.extend(rows_for(jobs, launcher, runs))
            for variant, values in runs.items():
                for key in ("to_first_s", "tail_s"):
                    stats[f"{launcher}_{jobs}_{variant}_{key}"] = Spread.of([v[key] for v in values])
    return BenchResult(
        ID,
        TITLE,
        rows,
        settings={
            "jobs": list(SIZES),
            "launchers": list(LAUNCHERS),
            "repeats": {str(k): v for k, v in repeats.items()},
            "explaunch": "python main.py -m experiment_type=probe experiment_type.duration_s=0 seed=range(0,N) "
            "hydra/launcher=L hydra.sweep.dir=...",
            "plain": "python app.py -m seed=range(0,N) hydra/launcher=L hydra.sweep.dir=...",
            "plain_app": PLAIN_APP,
            "plain_config": PLAIN_CONFIG,
        },
        raw=raw,
        stats=stats,
        notes=[
            "to the first job: command start to the first job's own code (plain: time.time() at the task's first "
            "line; explaunch: the mtime of the probe's probe_attempts, written at its first line)",
            "after the last job: the last job's own code ending (plain: time.time(); explaunch: probe start + its "
            "slept_s) to the command's exit (Popen.wait), all on the wall clock",
            "ratio = median over repeats of (explaunch / plain app) taken side by side, in alternating order",
            "load_1min: the machine's 1-minute load average before each command (other work on a shared machine)",
        ],
        wall_s=time.perf_counter() - start,
    )
