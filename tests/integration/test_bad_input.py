"""Bad input: one line naming key, value and what is allowed; exit 2; no job folder; no traceback."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import BAD_INPUTS
from tests.integration.helpers import run_main

BAD = BAD_INPUTS


@pytest.mark.parametrize(("override", "message"), BAD)
def test_bad_single_run_stops_before_any_job(tmp_path: Path, override: str, message: str) -> None:
    proc = run_main(override, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f"error: {message}"]
    assert list(tmp_path.iterdir()) == []  # no outputs/ folder, no job started


def test_an_unknown_key_added_with_plus_is_refused(tmp_path: Path) -> None:
    proc = run_main("-m", "+batching.foo=1,2", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[-1].startswith("error: batching.foo=1: no such key; keys here: strategy,")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("override", "message"), BAD)
def test_bad_value_anywhere_in_a_sweep_stops_it_before_any_job(tmp_path: Path, override: str, message: str) -> None:
    key, _, value = override.partition("=")
    good = {"batch": "8", "model": "llama", "hardware": "cpu", "seed": "0", "batching.max_new_tokens": "4"}[key]
    proc = run_main("-m", f"{key}={good},{value}", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f"error: {message}"]
    assert list(tmp_path.iterdir()) == []  # no multirun/ folder


def test_a_gpu_id_that_is_not_visible_anywhere_in_a_sweep_stops_it_before_any_job(tmp_path: Path) -> None:
    """Each job's own GPUs are checked, not only a value given once: here no NVIDIA GPU is visible, on a GPU machine
    the 64th is not."""
    sweep = tmp_path / "sweep"
    proc = run_main(
        "-m", "experiment_type=probe", "hardware.gpu_ids=[0],[63]", "tracking=none", f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2
    (line,) = proc.stderr.splitlines()
    assert re.match(r"error: hardware\.gpu_ids=\[(0|63)\]: ", line), line
    assert list(tmp_path.iterdir()) == []  # no sweep folder, no job folder
