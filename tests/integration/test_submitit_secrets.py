"""A sweep on submitit's launcher leaves no secret in its folder: submitit pickles what it sends each job (the
overrides, Hydra's state) and what the job returns (a ``JobReturn`` holding the config); both are removed once the
sweep has the job's result."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from explaunch.sweepdir import records
from tests.integration.helpers import run_main

pytestmark = pytest.mark.slow

RUN = uuid.uuid4().hex[:12]  # made at run time: a literal would sit in git.patch of a dirty checkout
OVERRIDE_SECRET = f"SEKRIT-sub-{RUN}"
ENV_SECRET = f"SEKRIT-subenv-{RUN}"


def test_a_submitit_sweep_leaves_no_secret_in_its_folder_or_store(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = run_main(
        "-m",
        "hydra/launcher=submitit_local",
        "experiment_type=probe",
        "seed=0,1",
        f"+params.api_token={OVERRIDE_SECRET}",
        "+params.db_password=${oc.env:EXPLAUNCH_TEST_SECRET}",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
        env={"EXPLAUNCH_TEST_SECRET": ENV_SECRET},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    done = [records.read_job_record(p.parent).status for p in sweep.glob("*/job.json")]
    assert done == [records.COMPLETED] * 2, done
    assert list(sweep.glob(".submitit/*/*.out")), "submitit's logs stay"
    assert not list(sweep.glob(".submitit/**/*.pkl")), list(sweep.glob(".submitit/**/*.pkl"))
    leaks = [
        str(path.relative_to(tmp_path))
        for path in tmp_path.rglob("*")
        if path.is_file() and any(s.encode() in path.read_bytes() for s in (OVERRIDE_SECRET, ENV_SECRET))
    ]
    assert leaks == [], leaks
    assert OVERRIDE_SECRET not in proc.stdout + proc.stderr and ENV_SECRET not in proc.stdout + proc.stderr
