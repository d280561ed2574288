"""``tracking.system_metrics=true``: MLflow's own system metrics on each job's run, beside explaunch's resources."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from tests.integration.helpers import run_main

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("multirun", [False, True])
def test_mlflows_system_metrics_are_logged_to_each_jobs_own_run(tmp_path: Path, multirun: bool) -> None:
    args = ["experiment_type=probe", "experiment_type.duration_s=1.5", "tracking.system_metrics=true"]
    if multirun:  # the jobs log their own runs (no relay): MLflow samples while they run
        args = ["-m", *args, "seed=0,1", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    else:
        args = [*args, f"hydra.run.dir={tmp_path / 'job'}"]
    proc = run_main(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    jobs = [r for r in runs if "job_dir" in r.data.tags]
    assert len(jobs) == (2 if multirun else 1), [r.data.tags for r in runs]
    for run in jobs:
        assert run.info.status == "FINISHED"
        assert any(name.startswith("system/cpu") for name in run.data.metrics), sorted(run.data.metrics)
        assert "resources_peak_rss_mib" in run.data.metrics or any("rss" in n for n in run.data.metrics)
