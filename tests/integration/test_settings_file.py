"""``./.env`` as a user keeps one: ``python main.py`` in that folder logs to the store it names; a variable given in
the environment wins; a malformed line stops the command in one line, exit 2, nothing run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.helpers import run_main

pytestmark = pytest.mark.slow


def test_the_store_comes_from_dotenv_unless_the_environment_names_one(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(f"MLFLOW_TRACKING_URI=sqlite:///{tmp_path / 'fromenv.db'}\n")
    proc = run_main("experiment_type=probe", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)  # no store given
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "fromenv.db").stat().st_size > 0
    assert not (tmp_path / "mlflow.db").exists()

    given = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'given.db'}"}  # the environment wins
    proc = run_main("experiment_type=probe", f"hydra.run.dir={tmp_path / 'run2'}", cwd=tmp_path, env=given)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "given.db").stat().st_size > 0


def test_a_malformed_dotenv_line_is_one_line_exit_2_and_nothing_runs(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("A=1\nthis is not a setting\n")
    proc = run_main("experiment_type=probe", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert proc.returncode == 2
    line = f"error: {tmp_path / '.env'}:2: not a KEY=value line (python-dotenv could not parse it); nothing was run"
    assert proc.stderr.strip() == line
    assert not (tmp_path / "run").exists()
