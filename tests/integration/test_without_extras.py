"""A core-only install (no ``[llm]`` extra): a sweep over experiment types that need no extra runs, and one with a job
that needs it stops before anything with one line naming the extra. torch, transformers and tokenizers are hidden
from ``main.py`` and its workers where Python looks modules up (a ``sitecustomize`` on ``PYTHONPATH`` that filters
``sys.meta_path``): ``import torch`` fails and ``importlib.util.find_spec`` finds nothing, as without the extra."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.integration.helpers import run_main

HIDDEN = ("torch", "transformers", "tokenizers")

HIDE = f"""
import sys

HIDDEN = {HIDDEN!r}


class Hidden:
    def __init__(self, finder):
        self.finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in HIDDEN:
            return None
        find = getattr(self.finder, "find_spec", None)
        return find(name, path, target) if find is not None else None

    def __getattr__(self, name):
        return getattr(self.finder, name)


sys.meta_path[:] = [Hidden(finder) for finder in sys.meta_path]
"""


def without_llm_extra(tmp_path: Path) -> dict[str, str]:
    """The environment of a ``main.py`` that finds none of the ``[llm]`` extra's packages."""
    folder = tmp_path / "core_only"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(HIDE)
    return {"PYTHONPATH": os.pathsep.join(p for p in (str(folder), os.environ.get("PYTHONPATH", "")) if p)}


def test_the_hidden_packages_are_not_found_in_the_subprocess(tmp_path: Path) -> None:
    """The simulation itself, which the tests below rely on: the extra's packages are not found, the core's are."""
    code = "import importlib.util as u; print(sorted(m for m in sys.argv[1:] if u.find_spec(m))); import torch"
    done = subprocess.run(
        [sys.executable, "-c", f"import sys; {code}", *HIDDEN, "omegaconf"],
        env={**os.environ, **without_llm_extra(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.strip() == "['omegaconf']", done.stderr
    assert done.stderr.strip().endswith("ModuleNotFoundError: No module named 'torch'")


def test_without_the_llm_extra_a_sweep_over_a_script_and_a_probe_runs(tmp_path: Path) -> None:
    """The default experiment type (llm_inference) is no job's: every job of the sweep overrides it."""
    run, sweep = tmp_path / "run", tmp_path / "sweep"
    run.mkdir()
    proc = run_main(
        "-m", "+experiment=legacy_words,probe_rehearsal", "tracking=none", f"hydra.sweep.dir={sweep}",
        cwd=run, env=without_llm_extra(tmp_path), timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = [json.loads((sweep / str(num) / "job.json").read_text()) for num in (0, 1)]
    assert [job["status"] for job in jobs] == ["completed", "completed"]
    assert [job["config"]["experiment_type"]["name"] for job in jobs] == ["script", "probe"]


def test_without_the_llm_extra_a_sweep_with_a_job_that_needs_it_stops_before_anything(tmp_path: Path) -> None:
    run, sweep = tmp_path / "run", tmp_path / "sweep"
    run.mkdir()
    proc = run_main(
        "-m", "experiment_type=probe,llm_inference", "tracking=none", f"hydra.sweep.dir={sweep}",
        cwd=run, env=without_llm_extra(tmp_path), timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "error: experiment_type=llm_inference: needs torch, transformers, tokenizers, not installed here: "
        "pip install 'explaunch[llm]' (or explaunch[all])"
    ]
    assert not sweep.exists() and list(run.iterdir()) == []
