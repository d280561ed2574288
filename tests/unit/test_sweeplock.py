"""The sweep folder's lock between real processes: one holder at a time, a dead holder's lock taken over."""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from explaunch.errors import SweepFolderBusy
from explaunch.launch.sweeplock import LOCK_FILE, SweepLock
from explaunch.sweepdir.ledger import Ledger, LedgerEntry

HOLD = """
import sys, time
from pathlib import Path
from explaunch.launch.sweeplock import SweepLock
lock = SweepLock(Path(sys.argv[1]))
lock.acquire()
print("held", flush=True)
time.sleep(120)
"""


def hold_in_another_process(folder: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_sweep_is_refused_naming_the_holder_and_leaves_its_line_alone(tmp_path: Path) -> None:
    holder = hold_in_another_process(tmp_path)
    try:
        before = (tmp_path / LOCK_FILE).read_bytes()
        with pytest.raises(SweepFolderBusy) as info:
            SweepLock(tmp_path).acquire()
        message = str(info.value)
        assert message.startswith(f"sweep folder {tmp_path} is in use by another sweep (pid {holder.pid} on ")
        assert socket.gethostname() in message and "started 20" in message and "\n" not in message
        assert (tmp_path / LOCK_FILE).read_bytes() == before
    finally:
        holder.kill()
        holder.communicate()


def test_the_lock_of_a_killed_sweep_is_taken_over(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    holder = hold_in_another_process(tmp_path)
    os.kill(holder.pid, signal.SIGKILL)
    holder.communicate()
    caplog.set_level(logging.INFO, logger="explaunch.launch.sweeplock")
    with SweepLock(tmp_path):
        held = json.loads((tmp_path / LOCK_FILE).read_text())
        assert held["pid"] == os.getpid()
    assert f"taking over from pid {holder.pid} on" in caplog.text
    assert (tmp_path / LOCK_FILE).read_text() == ""  # released: the next sweep has nobody to take over from


def test_a_released_lock_is_free_for_the_next_sweep_without_a_word(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="explaunch.launch.sweeplock")
    script = "import sys; from pathlib import Path; from explaunch.launch.sweeplock import SweepLock\n"
    script += "with SweepLock(Path(sys.argv[1])): pass"
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True)
    start = time.monotonic()
    with SweepLock(tmp_path):
        pass
    assert time.monotonic() - start < 1 and "taking over" not in caplog.text


def test_a_ledger_line_cut_by_a_full_disk_is_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ledger = Ledger(tmp_path)
    entry = LedgerEntry(key="a", job_num=0, overrides=["seed=0"], status="completed", attempt=1, job_dir="0", time="t")
    ledger.append(entry)
    real_write = os.write

    def half_then_full(fd: int, data: bytes) -> int:
        real_write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(OSError, match="No space left"):
        ledger.append(LedgerEntry(**{**entry.__dict__, "key": "b", "job_num": 1}))
    monkeypatch.undo()
    ledger.append(LedgerEntry(**{**entry.__dict__, "key": "c", "job_num": 2}))
    again = Ledger(tmp_path)
    assert sorted(again.latest) == ["a", "c"] and again.skipped_lines == 0
