"""The runs of a sweep: the sweep's own run (started by the sweep's parent, or its relay, before any job; closed at
the end with the job counts and the sweep's summary files), and the run of a job that logs its own (SLURM and
submitit jobs, single runs, ``tracking.system_metrics=true``), created when the job starts."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from explaunch.tracking.store import RUN_ID_FILE, SweepTracking, resolve_uri
from explaunch.tracking.writer import MlflowTracker, run_name


def start_sweep(
    tracking_uri: str,
    experiment: str,
    sweep_dir: Path,
    tags: Mapping[str, str],
    logged_by: str = "job",
    start_time_ms: int | None = None,
) -> SweepTracking:
    """In the parent, before any job: store, experiment and the sweep's parent run (the same run again when a
    stopped sweep is resumed into its folder)."""
    tracker = MlflowTracker(tracking_uri)
    previous = SweepTracking.read(sweep_dir)
    if previous is not None and previous.tracking_uri == tracking_uri and previous.parent_run_id:
        tracker.client.update_run(previous.parent_run_id, status="RUNNING")
        sweep = replace(previous, logged_by=logged_by)
    else:
        experiment_id = tracker.experiment_id(experiment)
        name = f"sweep {sweep_dir.parent.name}/{sweep_dir.name}"
        run_id = tracker.start_run(experiment_id, name, tags, start_time_ms=start_time_ms)
        sweep = SweepTracking(tracking_uri, experiment_id, run_id, logged_by)
    sweep.write(sweep_dir)
    return sweep


def finish_sweep(sweep_dir: Path, sweep: Any) -> None:
    """In the parent, after the jobs: counts as metrics, the sweep summary as artifacts, the run closed."""
    tracking = SweepTracking.read(sweep_dir)
    if tracking is None or not tracking.parent_run_id:
        return
    log_sweep_end(MlflowTracker(tracking.tracking_uri), tracking.parent_run_id, sweep_dir, sweep)


def log_sweep_end(tracker: MlflowTracker, run_id: str, sweep_dir: Path, sweep: Any) -> None:
    """The sweep's counts as metrics, its summary files as artifacts, its run closed."""
    counts = sweep.counts
    metrics = {f"jobs_{status}": float(n) for status, n in counts.items()}
    metrics["jobs_total"] = float(len(sweep.jobs))
    tracker.log(run_id, metrics=metrics)
    files = [sweep_dir / name for name in ("sweep.json", "sweep.csv", "multirun.yaml")]
    tracker.log_artifacts(run_id, files, sweep_dir)
    tracker.finish(run_id, failed=counts.get("completed", 0) != len(sweep.jobs))


# ---- a job that logs its own run ---------------------------------------------------------------------------------
def job_store(sweep_dir: Path | None, configured_uri: str | None, cwd: Path) -> tuple[SweepTracking | None, str]:
    """The sweep's tracking (None: a single run, or a sweep that left none) and the store the job's run goes to: the
    sweep's, else the configured one resolved from ``cwd``."""
    sweep = SweepTracking.read(sweep_dir) if sweep_dir else None
    return sweep, sweep.tracking_uri if sweep else resolve_uri(configured_uri, cwd)


def start_job_run(
    tracker: MlflowTracker,
    sweep: SweepTracking | None,
    experiment: str,
    job_dir: Path,
    run_tags: Mapping[str, str],
    overrides: list[str],
) -> str:
    """The job's run, created (RUNNING) under the sweep's run, or the same run again for a requeued attempt whose
    run is still RUNNING (SLURM time limit, preemption: one run per job); its id is written to ``mlflow_run_id``."""
    from explaunch.sweepdir.records import write_text_atomic

    experiment_id = sweep.experiment_id if sweep else tracker.experiment_id(experiment)
    previous = job_dir / RUN_ID_FILE
    earlier = previous.read_text().strip() if previous.exists() else ""
    if earlier and tracker.running(earlier):
        run_id = earlier
        tracker.log(earlier, tags={"requeued": os.environ.get("SLURM_RESTART_COUNT", "1")})
    else:
        parent = sweep.parent_run_id if sweep else None
        run_id = tracker.start_run(experiment_id, run_name(overrides), run_tags, parent)
    job_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(previous, run_id)
    return run_id
