"""Settings from the environment, and from a ``.env`` file in the working folder.

``python main.py`` and the ``explaunch`` command read ``./.env`` (python-dotenv: the format Docker Compose, MLflow's
own docs and most tools use, one ``KEY=value`` per line, ``export`` and quotes allowed) before anything else, so that a
team keeps its tracking server, credentials and cluster settings in one file next to its configs instead of in every
shell. Variables already in the environment win. Values land in the process's environment, where every secret-looking
name is redacted like any other (see :mod:`explaunch.redaction`). pydantic-settings would add a typed model and a
dependency for what is, here, a handful of strings that Hydra and MLflow read from the environment themselves.

:data:`SETTINGS` lists every setting explaunch reads; ``docs/cli.md`` shows the same list.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path

from explaunch.errors import SettingsFileError

DOTENV = ".env"

SETTINGS: dict[str, str] = {
    "MLFLOW_TRACKING_URI": "the tracking store when tracking.uri is null (a server URL, sqlite:///..., a folder)",
    "MLFLOW_TRACKING_USERNAME": "user of an MLflow server with basic auth (MLflow reads it)",
    "MLFLOW_TRACKING_PASSWORD": "password of an MLflow server with basic auth (MLflow reads it; redacted everywhere)",
    "MLFLOW_TRACKING_TOKEN": "token of an MLflow server (MLflow reads it; redacted everywhere)",
    "MLFLOW_DISABLE_TELEMETRY": "MLflow's usage telemetry; explaunch sets it to true unless given",
    "EXPLAUNCH_SLURM_PARTITION": "hydra/launcher=submitit_slurm: the partition",
    "EXPLAUNCH_SLURM_ACCOUNT": "hydra/launcher=submitit_slurm: the account",
    "EXPLAUNCH_SLURM_QOS": "hydra/launcher=submitit_slurm: the QOS",
    "EXPLAUNCH_SLURM_CONSTRAINT": "hydra/launcher=submitit_slurm: the node constraint",
    "EXPLAUNCH_SECRET_PATTERN": "a regular expression: config keys and variables it matches are secrets too",
    "EXPLAUNCH_PATCH_UNTRACKED": "1: git.patch also holds untracked files (never credential-looking ones)",
}

_UNPARSED = re.compile(r"line (\d+)")


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def read_dotenv(path: Path) -> dict[str, str]:
    """The ``KEY=value`` pairs of ``path``; a line python-dotenv cannot parse is one :class:`SettingsFileError`
    naming the file and the line (python-dotenv itself only logs it and goes on without the value)."""
    from dotenv import dotenv_values

    collect = _Collect()
    logger = logging.getLogger("dotenv.main")
    logger.addHandler(collect)
    propagate, logger.propagate = logger.propagate, False
    try:
        values = dotenv_values(path)
    finally:
        logger.removeHandler(collect)
        logger.propagate = propagate
    if collect.messages:
        found = _UNPARSED.search(collect.messages[0])
        where = f"{path}:{found.group(1)}" if found else str(path)
        raise SettingsFileError(f"{where}: not a KEY=value line (python-dotenv could not parse it); nothing was run")
    return {key: value for key, value in values.items() if value is not None}


def load_dotenv(folder: Path | None = None) -> list[str]:
    """Put the variables of ``<folder>/.env`` (the working folder) that the environment lacks into it; returns their
    names. No file, nothing done."""
    path = (folder or Path.cwd()) / DOTENV
    if not path.is_file():
        return []
    added = [key for key in read_dotenv(path).items() if key[0] not in os.environ]
    for key, value in added:
        os.environ[key] = value
    return [key for key, _ in added]


def load_dotenv_or_exit() -> None:
    """:func:`load_dotenv` for a command's start: a malformed file is one line on stderr and exit code 2."""
    try:
        load_dotenv()
    except SettingsFileError as ex:
        print(f"error: {ex}", file=sys.stderr)
        raise SystemExit(ex.exit_code) from None
