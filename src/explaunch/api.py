"""Sweeps from Python (a notebook, a script), exactly as from the shell.

``explaunch.sweep(overrides=[...])`` runs ``python main.py -m OVERRIDES`` in a process of its own, as a user types
it: the same pre-flight checks, folders, records and MLflow runs, the same signal handling, and no Hydra state left
behind in the caller (Hydra keeps global singletons; a notebook that ran one sweep in-process could not start
another). It returns the sweep's folder and records. ``explaunch.load_sweep(dir)`` reads a sweep back as a pandas
DataFrame, one row per job, with the columns ``explaunch report`` shows (swept parameters, status, every metric).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from explaunch.errors import ConfigError, ExplaunchError, UsageError
from explaunch.sweepdir.records import JOB_FILE, SWEEP_FILE, JobRecord, iter_job_records


@dataclass
class SweepResult:
    """What a sweep left: its folder, the command's exit code (0: every job completed; 1: some did not; 2: bad
    input, nothing ran; 130: interrupted), its job records in job order, and what the command printed."""

    sweep_dir: Path
    exit_code: int
    records: list[JobRecord] = field(default_factory=list)
    output: str = ""

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[JobRecord]:
        return iter(self.records)

    def __getitem__(self, index: int) -> JobRecord:
        return self.records[index]


def _main_py(config_dir: Path) -> Path:
    main = config_dir.parent / "main.py"
    if not main.is_file():
        raise ConfigError(
            "config_dir", str(config_dir), "a conf/ folder with explaunch's main.py beside it (the project's root)"
        )
    return main


def sweep(
    overrides: Sequence[str] = (),
    config_dir: str | Path | None = None,
    launcher: str | None = None,
    sweep_dir: str | Path | None = None,
    cwd: str | Path | None = None,
    check: bool = False,
    timeout: float | None = None,
) -> SweepResult:
    """Run ``python main.py -m OVERRIDES`` (``main.py`` beside ``config_dir``, by default this checkout's) in
    ``cwd`` (default: the current folder, where a command typed in the shell would run) and return its records.

    ``launcher``: ``joblib``, ``basic``, ``submitit_local``, ``submitit_slurm`` (as ``hydra/launcher=...``).
    ``sweep_dir``: the sweep's folder (default: ``multirun/<date>/<time>`` under ``cwd``, as Hydra names it); a
    folder of an earlier sweep resumes it. ``check``: raise :class:`ExplaunchError` when not every job completed.
    A bad override raises :class:`UsageError` with the command's one line, and nothing runs."""
    root = Path(__file__).resolve().parents[2]
    conf = Path(config_dir).resolve() if config_dir is not None else root / "conf"
    main = _main_py(conf)
    workdir = Path(cwd).resolve() if cwd is not None else Path.cwd()
    if sweep_dir is None:
        now = datetime.now()
        sweep_dir = workdir / "multirun" / now.strftime("%Y-%m-%d") / now.strftime("%H-%M-%S")
    folder = Path(sweep_dir).resolve()
    command = [sys.executable, str(main), "-m", *overrides]
    if launcher is not None:
        command.append(f"hydra/launcher={launcher}")
    command.append(f"hydra.sweep.dir={folder}")
    proc = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=timeout, check=False)
    output = proc.stdout + proc.stderr
    if proc.returncode == 2:
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
        lines = output.strip().splitlines()
        raise UsageError(errors[0].removeprefix("error: ") if errors else (lines[-1] if lines else "exit code 2"))
    found = [record for _, record in iter_job_records(folder)] if folder.is_dir() else []
    result = SweepResult(folder, proc.returncode, found, output)
    if check and proc.returncode != 0:
        raise ExplaunchError(f"sweep {folder}: exit code {proc.returncode}; see its summary:\n{output[-2000:]}")
    return result


def load_sweep(sweep_dir: str | Path) -> Any:
    """A sweep's jobs as a pandas DataFrame: one row per job, the columns of ``explaunch report --json`` (job, the
    swept parameters, status, every metric, energy quality)."""
    import pandas as pd

    from explaunch.review.rows import load_rows

    folder = Path(sweep_dir)
    if not (folder / SWEEP_FILE).exists() and not any(folder.glob(f"*/{JOB_FILE}")):
        raise ConfigError("sweep_dir", str(folder), "a sweep folder (with sweep.json or job folders)")
    return pd.DataFrame(load_rows(folder))
