"""explaunch.sweep / load_sweep from Python, as a notebook would call them."""

from __future__ import annotations

from pathlib import Path

import pytest

import explaunch
from explaunch.errors import UsageError
from tests.conftest import CONF_DIR

pytestmark = pytest.mark.slow


def test_a_sweep_from_python_is_the_command_line_s_and_reads_back_as_a_dataframe(tmp_path: Path) -> None:
    result = explaunch.sweep(
        overrides=["experiment_type=probe", "seed=0,1", "tracking=none"], config_dir=CONF_DIR, cwd=tmp_path
    )
    assert result.exit_code == 0, result.output[-3000:]
    assert result.sweep_dir.parent.parent == tmp_path / "multirun"  # multirun/<date>/<time>, as Hydra names it
    assert [r.status for r in result] == ["completed", "completed"] and len(result) == 2
    assert [r.job_num for r in result] == [0, 1]
    frame = explaunch.load_sweep(result.sweep_dir)
    assert list(frame["status"]) == ["completed", "completed"]
    assert {"job", "slept_s"} <= set(frame.columns)

    again = explaunch.sweep(
        overrides=["experiment_type=probe", "seed=0,1", "tracking=none"], config_dir=CONF_DIR,
        sweep_dir=result.sweep_dir, cwd=tmp_path,
    )  # fmt: skip
    assert again.exit_code == 0 and "2 of 2 jobs already done" in again.output  # resumed: nothing ran again


def test_bad_input_raises_the_command_s_one_line_and_runs_nothing(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"^batch=0: must be an integer >= 1$"):
        explaunch.sweep(overrides=["experiment_type=probe", "batch=0"], config_dir=CONF_DIR, cwd=tmp_path)
    assert not (tmp_path / "multirun").exists()
    with pytest.raises(explaunch.errors.ConfigError, match="config_dir"):
        explaunch.sweep(overrides=["experiment_type=probe"], config_dir=tmp_path, cwd=tmp_path)
    with pytest.raises(explaunch.errors.ConfigError, match="sweep_dir"):
        explaunch.load_sweep(tmp_path)
