"""The ``script`` experiment type: run an existing script unchanged and record it like any other job.

The command is an argv list (no shell); sweep values reach it through interpolation (``args: ["--lr",
"${params.lr}"]``). Its stdout and stderr go to ``stdout.txt`` / ``stderr.txt`` in the job folder and are streamed to
the job's own output; a non-zero exit code fails the job (stderr's last lines in the error). Metrics come from a JSON
or CSV file the script writes and from printed ``key=value`` lines; every file it created or changed in its output
folders, matching the patterns, is copied to ``artifacts/`` in the job folder (and so to MLflow).
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from explaunch.config import ExplaunchConfig
from explaunch.errors import JobTimeout
from explaunch.experiments.base import ExperimentResult

ARTIFACTS_DIR = "artifacts"
# What explaunch itself writes into a job folder: never taken for the script's outputs.
OWN_FILES = frozenset(
    {"job.json", "traceback.txt", "resources.csv", "emissions.csv", "git.patch", "stdout.txt", "stderr.txt"}
)
# What explaunch itself writes into a job folder: never taken for the script's outputs.
OWN_FILES = frozenset(
    {"job.json", "traceback.txt", "resources.csv", "emissions.csv", "git.patch", "stdout.txt", "stderr.txt"}
)


class ScriptFailed(Exception):
    """The script exited with a non-zero code (retried only when "ScriptFailed" is in hydra.sweeper.retry_on)."""


def _pump(source: IO[str], sink: IO[str], echo: IO[str], lines: list[str]) -> None:
    for line in source:
        sink.write(line)
        sink.flush()
        echo.write(line)
        echo.flush()
        lines.append(line)


def run_command(
    argv: list[str], cwd: Path, env: dict[str, str], timeout_s: float | None, job_dir: Path
) -> tuple[int, list[str], list[str]]:
    """Run ``argv``; tee its output to files in ``job_dir``; return (exit code, stdout lines, stderr lines)."""
    out_lines: list[str] = []
    err_lines: list[str] = []
    with (
        (job_dir / "stdout.txt").open("w", encoding="utf-8") as out_file,
        (job_dir / "stderr.txt").open("w", encoding="utf-8") as err_file,
    ):
        proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1
        )
        assert proc.stdout is not None and proc.stderr is not None
        pumps = [
            threading.Thread(target=_pump, args=(proc.stdout, out_file, sys.stdout, out_lines), daemon=True),
            threading.Thread(target=_pump, args=(proc.stderr, err_file, sys.stderr, err_lines), daemon=True),
        ]
        for pump in pumps:
            pump.start()
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise JobTimeout(f"script ran past experiment_type.timeout_s={timeout_s:g}") from None
        except BaseException:  # interrupted: the script must not outlive its job
            proc.kill()
            proc.wait()
            raise
        for pump in pumps:
            pump.join(timeout=5)
    return code, out_lines, err_lines


def metrics_from_lines(lines: Iterable[str], pattern: str) -> dict[str, float]:
    """The last value of each ``key`` the pattern (with groups ``key`` and ``value``) finds in the output."""
    found: dict[str, float] = {}
    regex = re.compile(pattern)
    for line in lines:
        for match in regex.finditer(line):
            try:
                found[match.group("key")] = float(match.group("value"))
            except ValueError:
                continue
    return found


def metrics_from_file(path: Path) -> dict[str, float]:
    """Numbers from a JSON object, or from the last row of a CSV with a header."""
    if not path.is_file():
        return {}
    if path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        data: dict[str, Any] = rows[-1] if rows else {}
    else:
        loaded = json.loads(path.read_text(encoding="utf-8"))
        data = loaded if isinstance(loaded, dict) else {}
    numbers: dict[str, float] = {}
    for key, value in data.items():
        try:
            numbers[str(key)] = float(value)
        except (TypeError, ValueError):
            continue
    return numbers


def snapshot_mtimes(folders: list[Path], patterns: list[str]) -> dict[Path, float]:
    return {p: p.stat().st_mtime for folder in folders for pattern in patterns for p in folder.glob(pattern)}


def collect_outputs(folders: list[Path], patterns: list[str], before: dict[Path, float], job_dir: Path) -> list[str]:
    """Copy the files the script created or changed to ``job_dir/artifacts``; return their artifact paths."""
    target = job_dir / ARTIFACTS_DIR
    collected = []
    for path, mtime in sorted(snapshot_mtimes(folders, patterns).items()):
        ours = path.parent == job_dir.resolve() and path.name in OWN_FILES
        if path.is_file() and not ours and before.get(path) != mtime:
            destination = target / path.name
            if destination.exists():  # two folders with the same file name
                destination = target / f"{path.parent.name}_{path.name}"
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, destination)
            collected.append(str(destination.relative_to(job_dir)))
    return collected


def run(config: ExplaunchConfig, job_dir: Path) -> ExperimentResult:
    spec = config.experiment_type
    cwd = Path(spec.cwd).expanduser() if spec.cwd else job_dir
    argv = [str(a) for a in (*spec.command, *spec.args)]
    env = {**os.environ, **{str(k): str(v) for k, v in spec.env.items()}, "EXPLAUNCH_JOB_DIR": str(job_dir)}
    folders = [(cwd / folder).resolve() for folder in spec.output_dirs] or [cwd.resolve()]
    before = snapshot_mtimes(folders, list(spec.output_patterns))
    start = time.perf_counter()
    code, out_lines, err_lines = run_command(argv, cwd, env, spec.timeout_s, job_dir)
    duration = time.perf_counter() - start
    artifacts = collect_outputs(folders, list(spec.output_patterns), before, job_dir)
    if code != 0:
        tail = "".join(err_lines[-3:]).strip().replace("\n", " | ")
        raise ScriptFailed(f"exit code {code}: {tail or 'no stderr'} (stderr.txt in the job folder)")
    metrics = metrics_from_lines(out_lines, spec.metrics_regex) if spec.metrics_regex else {}
    if spec.metrics_file:
        metrics.update(metrics_from_file(cwd / spec.metrics_file))
    metrics["script_duration_s"] = duration
    info = {"command": argv, "cwd": str(cwd), "exit_code": code, "artifacts": artifacts}
    return ExperimentResult(metrics=metrics, info=info)
