"""One error hierarchy for explaunch: each error is one line for the user and one exit code.

``ConfigError`` subclasses Hydra's ``CompactHydraException`` so that, should one escape into Hydra's own error
reporting, Hydra also prints only its message (no traceback).
"""

from __future__ import annotations

from hydra.errors import CompactHydraException

EXIT_USAGE = 2  # bad input from the user (as argparse does)
EXIT_FAILED = 1  # something ran and failed


class ExplaunchError(Exception):
    """Base of every error explaunch raises on purpose."""

    exit_code = EXIT_FAILED


class ConfigError(ExplaunchError, CompactHydraException):
    """A config value, key or group option the user gave is not allowed. Never retried."""

    exit_code = EXIT_USAGE

    def __init__(self, key: str, value: object, allowed: str) -> None:
        self.key = key
        self.value = value
        self.allowed = allowed
        from explaunch.redaction import redact, strip_url_credentials  # the line is printed and may be logged

        super().__init__(strip_url_credentials(f"{key}={format_value(redact(key.lstrip('+~'), value))}: {allowed}"))


class UsageError(ExplaunchError):
    """Bad input met outside a config (a command's arguments, an API call): its one line as the command said it."""

    exit_code = EXIT_USAGE


class SettingsFileError(ExplaunchError):
    """A settings file (``.env``) the user wrote has a line that cannot be read."""

    exit_code = EXIT_USAGE


class RecordError(ExplaunchError):
    """A job or sweep record is missing, unreadable or of an unknown schema version."""


class SweepFolderBusy(ExplaunchError):
    """Another sweep holds the sweep folder (explaunch.launch.sweeplock)."""


class FolderNotWritable(ExplaunchError):
    """A folder the sweep writes to cannot be created or written (read-only, a file in the path, a full disk)."""


def format_value(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


class JobTimeout(Exception):
    """A job ran past ``hydra.sweeper.job_timeout_s``: it is ended and recorded as ``timeout``."""


class JobInterrupted(Exception):
    """Ctrl-C or SIGTERM reached a running job: it ends and is recorded as ``interrupted``.

    An ``Exception`` (not ``KeyboardInterrupt``) on purpose: Hydra then records the job and runs its callbacks.
    """
