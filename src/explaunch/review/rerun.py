"""Rerun a job from its folder (``explaunch reproduce``): plan the command, run it into a new folder.

The rerun is ``python <code_dir>/<entry> <recorded overrides> seed=<recorded seed> hydra.run.dir=<new folder>``, with
the code folder the job's snapshot names, the Python it ran with (where that still exists, else this one), and the
thread-count and hash-seed variables it ran with (:data:`RESTORED_ENV`); not logged to MLflow unless ``track``.

Comparing the rerun with the original: :mod:`explaunch.review.rerun_comparison`; packing a job to rerun elsewhere:
:mod:`explaunch.review.job_archive`.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from explaunch.errors import ExplaunchError
from explaunch.redaction import REDACTED
from explaunch.sweepdir import records

# Variables that change numerics or thread counts: the rerun gets the values the job ran with.
RESTORED_ENV = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "PYTHONHASHSEED",
    "CUBLAS_WORKSPACE_CONFIG",
)
LOG_FILE = "reproduce.log"


@dataclass(frozen=True)
class Rerun:
    command: list[str]
    env: dict[str, str]  # the variables set on top of the current environment
    out_dir: Path
    code_dir: Path

    def shell(self) -> str:
        assigned = [f"{k}={shlex.quote(v)}" for k, v in self.env.items()]
        return " ".join([*assigned, shlex.join(self.command)])


def override_key(override: str) -> str:
    return override.partition("=")[0].lstrip("+~")


def recorded_overrides(job_dir: Path, record: records.JobRecord) -> list[str]:
    """Hydra's ``.hydra/overrides.yaml`` (the values as given, but secrets redacted and ``${oc.env:...}`` kept as
    written, so that the rerun reads the variable again), else the record's."""
    path = job_dir / ".hydra" / "overrides.yaml"
    if path.is_file():
        import yaml

        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        if isinstance(data, list):
            return [str(o) for o in data]
    return list(record.overrides)


def merge_overrides(
    recorded: Sequence[str], extra: Sequence[str], seed: int | None, *, check_redacted: bool = True
) -> list[str]:
    """``extra`` replaces a recorded override of the same key; the recorded seed is added when not overridden.
    A value still redacted is an error (unless ``check_redacted`` is false)."""
    for override in extra:
        if "=" not in override:
            raise ExplaunchError(f"--override {override}: expected KEY=VALUE")
    replaced = {override_key(o) for o in extra}
    merged = [o for o in recorded if override_key(o) not in replaced] + list(extra)
    for override in merged:
        if check_redacted and override.partition("=")[2] == REDACTED:
            key = override_key(override)
            raise ExplaunchError(
                f"override {key}: its value was redacted when the job was recorded; give it with --override {key}=VALUE"
            )
    if seed is not None and "seed" not in {override_key(o) for o in merged}:
        merged.append(f"seed={seed}")
    return merged


def code_location(record: records.JobRecord, code_dir: Path | None) -> tuple[Path, str]:
    """The folder holding the entry script and ``conf/``: ``code_dir`` if given, else the one the snapshot names
    (else its git root when the entry script is there)."""
    snapshot = record.snapshot
    entry = str(snapshot.get("entry") or "main.py")
    candidates = [code_dir] if code_dir else [snapshot.get("code_dir"), (snapshot.get("git") or {}).get("root")]
    for candidate in candidates:
        if candidate and (Path(candidate) / entry).is_file():
            return Path(candidate).resolve(), entry
    where = code_dir or snapshot.get("code_dir") or "not recorded"
    raise ExplaunchError(
        f"code folder {where}: no {entry} there; give --code-dir DIR (the folder with {entry} and conf/)"
    )


def default_out_dir(base: Path, now: datetime | None = None) -> Path:
    """``reproduce/<date>/<time>`` under ``base`` (not inside the sweep: its summaries count every job.json below)."""
    stamp = now or datetime.now()
    folder = base / "reproduce" / stamp.strftime("%Y-%m-%d") / stamp.strftime("%H-%M-%S")
    candidate, n = folder, 1
    while candidate.exists():
        candidate = folder.with_name(f"{folder.name}-{n}")
        n += 1
    return candidate


def hydra_value(text: str) -> str:
    """A value Hydra's override parser takes as one string (paths may hold ``:``, ``,`` or spaces)."""
    if re.fullmatch(r"[\w/.\-]+", text):
        return text
    return f"'{text}'" if "'" not in text else f'"{text}"'


def plan(
    job_dir: Path,
    out_dir: Path | None = None,
    *,
    code_dir: Path | None = None,
    overrides: Sequence[str] = (),
    track: bool = False,
    python: str | None = None,
) -> Rerun:
    record = records.read_job_record(job_dir)
    folder, entry = code_location(record, code_dir)
    out = (out_dir or default_out_dir(Path.cwd())).resolve()
    if (out / records.JOB_FILE).exists():
        raise ExplaunchError(f"--out {out}: holds a job record already; choose a new folder")
    merged = merge_overrides(recorded_overrides(job_dir, record), overrides, record.snapshot.get("seed"))
    if not track and "tracking=none" not in merged:
        merged = [o for o in merged if not override_key(o).startswith("tracking.backend")]
        merged.append("tracking.backend=none")
    recorded_python = str(record.snapshot.get("executable") or "")
    interpreter = python or (recorded_python if Path(recorded_python).is_file() else sys.executable)
    command = [interpreter, str(folder / entry), *merged, f"hydra.run.dir={hydra_value(str(out))}"]
    recorded_env = record.snapshot.get("environment") or {}
    env = {k: str(recorded_env[k]) for k in RESTORED_ENV if k in recorded_env and recorded_env[k] != REDACTED}
    return Rerun(command, env, out, folder)


def run(rerun: Rerun, cwd: Path | None = None, timeout_s: float | None = None) -> records.JobRecord:
    """Run the job; its output goes to ``<out_dir>/reproduce.log``. The rerun's record, completed or failed."""
    rerun.out_dir.mkdir(parents=True, exist_ok=True)
    log = rerun.out_dir / LOG_FILE
    env = {**os.environ, **rerun.env, "HYDRA_FULL_ERROR": "0"}
    with log.open("w", encoding="utf-8") as handle:
        handle.write(f"$ {rerun.shell()}\n")
        handle.flush()
        try:
            code = subprocess.run(
                rerun.command,
                cwd=cwd or Path.cwd(),
                env=env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=timeout_s,
                check=False,
            ).returncode
        except subprocess.TimeoutExpired:
            raise ExplaunchError(f"the rerun ran past {timeout_s} s; its output: {log}") from None
    if not (rerun.out_dir / records.JOB_FILE).is_file():
        tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1:] or [""]
        raise ExplaunchError(f"the rerun (exit {code}) wrote no job record: {tail[0]} (full output: {log})")
    return records.read_job_record(rerun.out_dir)
