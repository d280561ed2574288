"""B5: ``explaunch report`` over a sweep of 1000 job folders within 1 s; ``explaunch --help`` within 0.3 s.

The 1000 folders are written with ``records.write_job_record`` from the ``job.json`` of a real job (a small LLM
job with all recording on, run first), varied as a grid would vary them: model x batch x seed, with the config,
times and metrics to match. Both commands are timed whole (process start to exit), as a user runs them, through the
``explaunch`` console script.
"""

from __future__ import annotations

import copy
import json
import shutil
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks.harness import MAIN, BenchResult, Context, Row, Spread, Target, timed_run

ID = "B5"
TITLE = "explaunch report over 1000 job folders; explaunch --help"
FOLDERS = 1000
TARGET_REPORT = Target("<=", 1.0)
TARGET_HELP = Target("<=", 0.3)
TEMPLATE_JOB = ("batching.num_prompts=8", "batching.max_new_tokens=4", "batching.warmup_batches=1")
MODELS, BATCHES = ("llama", "mistral"), (1, 2, 4, 8, 16)


def explaunch_command() -> list[str]:
    script = Path(sys.executable).parent / "explaunch"
    return [str(script)] if script.exists() else [shutil.which("explaunch") or "explaunch"]


def template_record(workdir: Path) -> dict[str, Any]:
    run_dir = workdir / "template"
    timed_run([sys.executable, str(MAIN), *TEMPLATE_JOB, f"hydra.run.dir={run_dir}"], cwd=workdir)
    data: dict[str, Any] = json.loads((run_dir / "job.json").read_text())
    return data


def grid_record(template: dict[str, Any], number: int) -> dict[str, Any]:
    """Job ``number`` of a model x batch x seed grid, made from the template."""
    model = MODELS[number % len(MODELS)]
    batch = BATCHES[(number // len(MODELS)) % len(BATCHES)]
    seed = number // (len(MODELS) * len(BATCHES))
    data = copy.deepcopy(template)
    data["job_num"] = number
    data["overrides"] = [f"model={model}", f"batch={batch}", f"seed={seed}"]
    data["config"]["seed"] = seed
    data["config"]["batch"] = batch
    if isinstance(data["config"].get("model"), dict):
        data["config"]["model"]["name"] = model
    start = datetime.fromisoformat(template["start_time"]) + timedelta(seconds=3 * number)
    data["start_time"] = start.isoformat(timespec="milliseconds")
    data["end_time"] = (start + timedelta(seconds=data["duration_s"])).isoformat(timespec="milliseconds")
    scale = 1.0 + 0.01 * ((number * 37) % 21 - 10)  # figures that differ from job to job
    data["metrics"] = {k: v * scale for k, v in data["metrics"].items()}
    return data


def write_sweep(template: dict[str, Any], sweep_dir: Path) -> None:
    from explaunch.sweepdir import records

    for number in range(FOLDERS):
        record = records.JobRecord.from_dict(grid_record(template, number))
        records.write_job_record(sweep_dir / str(number), record)
    records.write_sweep_record(sweep_dir)


def run(ctx: Context) -> BenchResult:
    workdir = ctx.scratch(ID)
    start = time.perf_counter()
    sweep_dir = workdir / "sweep"
    write_sweep(template_record(workdir), sweep_dir)
    cli = explaunch_command()
    _, listed = timed_run([*cli, "report", str(sweep_dir), "--json"], cwd=workdir)
    shown = len(json.loads(listed.stdout))
    if shown != FOLDERS:
        raise RuntimeError(f"explaunch report lists {shown} jobs of {FOLDERS}")
    report = [timed_run([*cli, "report", str(sweep_dir)], cwd=workdir)[0] for _ in range(ctx.n(5))]
    helps = [timed_run([*cli, "--help"], cwd=workdir)[0] for _ in range(ctx.n(9))]
    stats = {"report": Spread.of(report), "help": Spread.of(helps)}
    rows = [
        Row(
            ID,
            "explaunch report, 1000 job folders",
            stats["report"].median,
            "s",
            TARGET_REPORT,
            stats["report"].min,
            stats["report"].max,
            detail=f"whole command, table output; {len(report)} runs",
        ),
        Row(
            ID,
            "explaunch --help",
            stats["help"].median,
            "s",
            TARGET_HELP,
            stats["help"].min,
            stats["help"].max,
            detail=f"whole command; {len(helps)} runs",
        ),
    ]
    return BenchResult(
        ID,
        TITLE,
        rows,
        settings={"folders": FOLDERS, "template_job": list(TEMPLATE_JOB), "command": cli},
        raw={"report_s": report, "help_s": helps},
        stats=stats,
        wall_s=time.perf_counter() - start,
    )
