"""The resume ledger: ``ledger.jsonl`` in the sweep folder, one line per job outcome, keyed by config hash.

Only the sweep's parent writes it, one ``write`` of one line per outcome on a file opened for appending, flushed and
fsynced: a killed parent leaves whole lines, and a write cut short by a full disk is truncated away. The last line
of a key wins (a failed attempt, then its retry).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from explaunch.redaction import redact_unresolved, secret_values

LEDGER_FILE = "ledger.jsonl"


@dataclass(frozen=True)
class LedgerEntry:
    key: str  # config hash of the job as the grid defines it (before any OOM fallback)
    job_num: int
    overrides: list[str]
    status: str
    attempt: int
    job_dir: str
    time: str
    duration_s: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)


class Ledger:
    def __init__(self, sweep_dir: Path) -> None:
        self.path = sweep_dir / LEDGER_FILE
        self.latest: dict[str, LedgerEntry] = {}
        self.skipped_lines = 0
        if self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = LedgerEntry(**json.loads(line))
                except (json.JSONDecodeError, TypeError):
                    self.skipped_lines += 1  # a line cut by a crash: that job simply is not done
                    continue
                self.latest[entry.key] = entry

    def append(self, entry: LedgerEntry) -> None:
        """Write ``entry`` (secrets in its overrides and details redacted, in the file as in ``latest``)."""
        values = secret_values([entry.overrides, entry.details])
        entry = replace(
            entry,
            overrides=redact_unresolved(list(entry.overrides), values),
            details=redact_unresolved(dict(entry.details), values),
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(asdict(entry), default=str) + "\n"
        data = line.encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            try:
                if os.write(fd, data) != len(data):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
                os.fsync(fd)
            except OSError:  # a full disk: cut the part written, so that the next line starts on a line of its own
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                raise
        finally:
            os.close(fd)
        self.latest[entry.key] = entry

    def status(self, key: str) -> str | None:
        entry = self.latest.get(key)
        return entry.status if entry else None
