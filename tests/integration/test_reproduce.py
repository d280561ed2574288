"""``explaunch reproduce``: real jobs rerun from their folders, from the project and from a small git repository of
their own (main.py + conf/ + a scored script) whose code the tests change between the job and its rerun."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from explaunch.cli import main
from explaunch.sweepdir import records
from tests.conftest import CONF_DIR, MAIN
from tests.integration.conftest import Sweep
from tests.integration.helpers import run_main

pytestmark = pytest.mark.slow

SCORE_SCRIPT = """\
import argparse

parser = argparse.ArgumentParser()
parser.add_argument("--seed", type=int)
OFFSET = {offset}
print(f"score={{parser.parse_args().seed / 8 + OFFSET}}")
"""
SCORE_EXPERIMENT = """\
# @package _global_
defaults:
  - override /experiment_type: script

experiment_type:
  command: ["${explaunch.python:}", "${explaunch.code_dir:}/score.py"]
  args: ["--seed", "${seed}"]
"""


def git(repo: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True)
    return proc.stdout.strip()


def make_repo(root: Path) -> Path:
    """A project of its own: explaunch's main.py and conf/, plus score.py (prints score=seed/8+OFFSET), committed."""
    repo = root / "repo"
    shutil.copytree(CONF_DIR, repo / "conf")
    shutil.copy2(MAIN, repo / "main.py")
    (repo / "conf" / "experiment" / "score.yaml").write_text(SCORE_EXPERIMENT)
    (repo / "score.py").write_text(SCORE_SCRIPT.format(offset=0.5))
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "score 0.5")
    return repo


def commit_offset(repo: Path, offset: float) -> str:
    (repo / "score.py").write_text(SCORE_SCRIPT.format(offset=offset))
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-am", f"score {offset}")
    return git(repo, "rev-parse", "HEAD")


def score_job(repo: Path, job_dir: Path) -> records.JobRecord:
    proc = run_main(
        "+experiment=score",
        "seed=3",
        "tracking=none",
        f"hydra.run.dir={job_dir}",
        cwd=repo.parent,
        main=repo / "main.py",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return records.read_job_record(job_dir)


def test_deterministic_llm_job_is_reproduced(
    literal_sweep: Sweep, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job_dir, original = next(records.iter_job_records(literal_sweep.dir))
    code = main(["reproduce", str(job_dir), "--out", str(tmp_path / "rerun")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.splitlines()[-1].startswith("REPRODUCED: ")
    rerun = records.read_job_record(tmp_path / "rerun")
    assert rerun.info["output_sha256"] == original.info["output_sha256"]  # the same generated token ids
    assert rerun.metrics["output_tokens"] == original.metrics["output_tokens"]
    assert rerun.config_hash == original.config_hash
    assert rerun.tracking == {"backend": "none"}  # the rerun is not logged unless --track


def test_job_after_a_code_change_differs_naming_the_commit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = make_repo(tmp_path)
    before = git(repo, "rev-parse", "HEAD")
    original = score_job(repo, tmp_path / "job")
    assert original.metrics["score"] == 3 / 8 + 0.5
    assert original.snapshot["code_dir"] == str(repo.resolve())

    assert main(["reproduce", str(tmp_path / "job"), "--out", str(tmp_path / "same")]) == 0
    assert "REPRODUCED" in capsys.readouterr().out

    after = commit_offset(repo, 0.75)
    assert main(["reproduce", str(tmp_path / "job"), "--out", str(tmp_path / "changed")]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].startswith("DIFFERS: score (environment changed: env_hash: ")
    assert f"git commit: {before[:12]} -> {after[:12]}" in lines[-1]
    score_row = next(line for line in lines if " score " in line).split()
    assert score_row[:5] == ["DIFFERS", "result", "score", "0.875", "1.125"]
    commit_row = next(line for line in lines if "git commit" in line)
    assert commit_row.split()[:5] == ["~", "environment", "git", "commit", before[:12]]
    assert commit_row.endswith("files: score.py")

    # --against compares two folders, rerunning nothing: the first rerun matches the job, the second does not
    assert main(["reproduce", str(tmp_path / "job"), "--against", str(tmp_path / "same")]) == 0
    assert "REPRODUCED" in capsys.readouterr().out
    assert main(["reproduce", str(tmp_path / "job"), "--against", str(tmp_path / "changed"), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["verdict"] == "DIFFERS"
    assert [r["name"] for r in data["rows"] if r["status"] == "differs"] == ["score"]


def test_archive_holds_the_job_and_its_script_reruns_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = make_repo(tmp_path)
    (repo / "score.py").write_text(SCORE_SCRIPT.format(offset=2.0))  # uncommitted: the job runs dirty code
    original = score_job(repo, tmp_path / "job")
    assert original.snapshot["git"]["dirty"] and original.metrics["score"] == 3 / 8 + 2.0
    (repo / "score.py").write_text(SCORE_SCRIPT.format(offset=0.5))  # the working tree moves on

    archive = tmp_path / "job3.tar.gz"
    assert main(["reproduce", str(tmp_path / "job"), "--archive", str(archive)]) == 0
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        tar.extractall(tmp_path / "elsewhere", filter="data")
    expected = ["job.json", "config.yaml", "overrides.yaml", "snapshot.json", "requirements.txt", "git.patch"]
    expected += ["reproduce.py", "README.txt", "code/main.py", "code/conf/config.yaml", "code/score.py"]
    assert {f"job3/{name}" for name in expected} <= names
    unpacked = tmp_path / "elsewhere" / "job3"
    assert "OFFSET = 2.0" in (unpacked / "code" / "score.py").read_text()  # the commit with git.patch applied
    assert "+experiment=score seed=3 tracking=none" in (unpacked / "README.txt").read_text()

    proc = subprocess.run(
        [sys.executable, str(unpacked / "reproduce.py"), "--out", str(tmp_path / "rerun")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "REPRODUCED" in proc.stdout.splitlines()[-1]
    assert records.read_job_record(tmp_path / "rerun").metrics["score"] == original.metrics["score"]


def test_reproduce_bad_input_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["reproduce", str(tmp_path)]) == 1
    assert (
        capsys.readouterr().err
        == f"error: {tmp_path}: no job.json here; give a job folder (e.g. multirun/<date>/<time>/0)\n"
    )
