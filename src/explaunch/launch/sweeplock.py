"""One sweep at a time in a sweep folder: ``.sweep.lock``, held by the sweep's parent while it runs.

Two sweeps in one folder (two terminals, a double submit) would number jobs alike, write the same job folders and
append to one ledger. The second one refuses with one line naming the holder.

The lock is a POSIX record lock (``fcntl.lockf``) on that file, not a file created with ``O_EXCL``:

- the kernel releases it whenever the holder ends, SIGKILL and OOM killer included, so a lock "left by a dead
  process" is no lock at all and the next sweep takes it at once: no stale file to judge by pid and host, no race
  between two sweeps both deciding the holder is dead, no pid reused by an unrelated process;
- it is taken or refused in one system call (atomic);
- a POSIX lock belongs to the process, not to an open file: workers forked from the parent (which may outlive it)
  do not inherit it, as they would a ``flock``; and NFS carries POSIX locks to the server (NLM, NFSv4).

What the file holds (host, pid, start time) only names the holder in the refusal; a holder that died leaves its
line behind (one that ended normally empties the file), and the next sweep says it took the folder over. The one
rule POSIX locks impose: the holding process must not open and close the file another time (that drops its lock),
so only this module touches it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from explaunch.errors import SweepFolderBusy
from explaunch.job.recording import now_iso

log = logging.getLogger(__name__)

LOCK_FILE = ".sweep.lock"
_NO_LOCKS = frozenset({errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS})


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    started: str

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}, started {self.started}"


class SweepLock:
    """``with SweepLock(sweep_dir):`` runs the body holding the folder's lock, or raises :class:`SweepFolderBusy`.

    The folder must exist. Creating ``.sweep.lock`` (the first time) is all a refused sweep writes."""

    def __init__(self, sweep_dir: Path) -> None:
        self.path = sweep_dir / LOCK_FILE
        self.fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as ex:
            if ex.errno in _NO_LOCKS:  # a filesystem without locks (an NFS mount without lockd): run unguarded
                log.warning(
                    "sweep folder %s: no file locks here (%s); a second sweep would not be refused",
                    self.path.parent,
                    ex.strerror,
                )
                self.fd = fd
                return
            holder = _read_holder(fd)
            os.close(fd)
            if ex.errno not in (errno.EACCES, errno.EAGAIN):
                raise
            who = holder.describe() if holder else "a process that has not said who it is yet"
            raise SweepFolderBusy(f"sweep folder {self.path.parent} is in use by another sweep ({who})") from None
        previous = _read_holder(fd)
        if previous is not None:  # the lock was free, so its holder ended without a word: say so
            log.info("sweep folder %s: taking over from %s (no longer running)", self.path.parent, previous.describe())
        me = Holder(socket.gethostname(), os.getpid(), now_iso())
        self.fd = fd
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(me.__dict__) + "\n").encode(), 0)
        except OSError as ex:  # a full disk: the lock holds all the same, a refused sweep cannot name us
            log.warning("sweep folder %s: the lock's holder line not written: %s", self.path.parent, ex)

    def release(self) -> None:
        """Empties the file and keeps it: removing it could race with a sweep that has just opened it. A holder
        line found by the next sweep is thus one left by a sweep that ended without releasing (killed)."""
        fd, self.fd = self.fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing drops the lock

    def __enter__(self) -> SweepLock:
        self.acquire()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.release()


def _read_holder(fd: int) -> Holder | None:
    try:
        data = json.loads(os.pread(fd, 4096, 0).decode() or "null")
        return Holder(str(data["host"]), int(data["pid"]), str(data["started"]))
    except (OSError, ValueError, TypeError, KeyError):
        return None
