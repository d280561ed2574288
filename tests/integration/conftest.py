from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.helpers import TINY, run_main

# Made at run time: a literal here would sit in git.patch (the uncommitted test file) of a dirty checkout.
SECRET = f"sekrit-{uuid.uuid4().hex}"
# The literal sweep's jobs keep their generated text too ("True" as Hydra's sweeper writes a bool in the overrides).
SAVE_OUTPUTS = "experiment_type.save_outputs=True"


@dataclass(frozen=True)
class Sweep:
    cwd: Path
    dir: Path
    output: str

    @property
    def store(self) -> str:
        return f"sqlite:///{self.cwd / 'mlflow.db'}"


@pytest.fixture(scope="session")
def literal_sweep(tmp_path_factory: pytest.TempPathFactory) -> Sweep:
    """``python main.py -m model=llama,mistral batch=8,16,32`` on 2 joblib workers, all recording on (the generated
    text too), against an MLflow store that does not exist yet (the default one, ``<cwd>/mlflow.db``), with a secret
    in the environment."""
    cwd = tmp_path_factory.mktemp("literal")
    sweep_dir = cwd / "sweep"
    proc = run_main(
        "-m",
        "model=llama,mistral",
        "batch=8,16,32",
        *TINY,
        SAVE_OUTPUTS,
        "hydra.launcher.n_jobs=2",
        f"hydra.sweep.dir={sweep_dir}",
        cwd=cwd,
        env={"EXPLAUNCH_TEST_API_TOKEN": SECRET},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return Sweep(cwd, sweep_dir, proc.stdout + proc.stderr)
