"""The client of the energy meter sidecar (:mod:`explaunch.measure.sidecar`): a separate process, measuring the
process that started it, that reads the hardware counters (RAPL, NVML, :mod:`explaunch.measure.counters`) at each
window's edges and every ``sample_interval`` between, and runs codecarbon for what no counter covers and for the
grid's carbon intensity.

Why: codecarbon samples from two ``threading.Timer`` threads. Inside a job's process each sample walks ``/proc``
through psutil, and every read releases and retakes the GIL; a pure-Python job thread then loses the GIL at each
read (a convoy), about 2-3 % of its speed although the sampler itself uses ~5 ms of CPU a second (benchmark B6). In
a separate process the sampler takes nothing from the job but a share of another core.

One sidecar per measured process, started on first use (``python -m explaunch.measure.sidecar <pid>``) and alive
as long as that process: it exits when its stdin closes, so a killed worker leaves no sidecar behind; a forked child
starts its own. Several trackers may run in it at once (a job's tracker and a measured region's inside it); a
window's first and last reads are taken when its start and stop requests arrive (the client synchronizes its GPU
right before sending them). Requests and replies are JSON lines, one reply per request, in order (a lock: trackers
may live in different threads); a start's reply is read before the next request's rather than awaited. Every reply
is awaited with a time limit: a sidecar that hangs is ended and its trackers read as errors, never as a hang.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

PROBE_TIMEOUT_S = 120.0  # a sidecar's first reply: it imports codecarbon and probes the hardware first (~0.4 s)
REPLY_TIMEOUT_S = 30.0  # any later reply (a tracker's start or stop takes milliseconds)


class MeterError(RuntimeError):
    """The sidecar could not start, ended, did not answer in time or refused: the measured code goes on."""


@dataclass
class _Sidecar:
    owner: int  # the pid that started it and that it measures
    proc: subprocess.Popen[bytes]
    probed: bool = False  # it answered once: its hardware probe is behind it
    sent: int = 0  # requests sent; the sidecar answers them in order
    answered: int = 0  # replies read
    wanted: dict[int, dict[str, Any] | None] = field(default_factory=dict)  # request number -> its reply once read
    received: bytes = b""  # read from its stdout, not yet taken as a reply (several replies may come in one read)


@dataclass(frozen=True)
class Ticket:
    """A tracker running in a sidecar: :func:`stop` asks that sidecar, not a newer one."""

    sidecar: _Sidecar
    id: int


@dataclass(frozen=True)
class Stopping:
    """A stop request sent to the sidecar (:func:`stop_request`); :meth:`reading` waits for its answer."""

    ticket: Ticket
    request: int

    def reading(self) -> dict[str, Any] | None:
        """The reading's fields (see explaunch.measure.energy.EnergyReading), None when codecarbon recorded none."""
        with _lock:
            reading: dict[str, Any] | None = _answer(self.ticket.sidecar, self.request).get("reading")
        return reading


_lock = threading.Lock()
_sidecar: _Sidecar | None = None
_next_id = 0


def prestart() -> None:
    """Start the sidecar now, without waiting: it imports codecarbon and probes the hardware (~0.4 s) meanwhile."""
    with _lock:
        _current()


def start(settings: dict[str, Any], *, wait: bool = True) -> Ticket:
    """Start a tracker in this process's sidecar; returns once it runs (its counters are read: the window's first
    edge). ``settings``: country, interval (codecarbon's), csv, sample_interval (counters), powercap_root, gpus.
    ``wait=False``: once the request is sent
    (the sidecar builds and starts the tracker in ~10 ms that the caller need not wait for: a job's set-up goes on
    meanwhile); a start that fails is then reported by :func:`stop`. The first start of a sidecar always waits for
    its hardware probe (~0.4 s)."""
    global _next_id
    message = {**settings, "op": "start"}
    with _lock:
        sidecar = _current()
        _next_id += 1
        request = _send(sidecar, {**message, "id": _next_id}, wanted=wait or not sidecar.probed)
        if request in sidecar.wanted:
            _answer(sidecar, request)
        return Ticket(sidecar, _next_id)


def stop(ticket: Ticket) -> dict[str, Any] | None:
    """The reading's fields (see explaunch.measure.energy.EnergyReading), None when codecarbon recorded none."""
    return stop_request(ticket).reading()


def stop_request(ticket: Ticket) -> Stopping:
    """Ask the sidecar to stop a tracker now; the reading is waited for later (``.reading()``), so that the caller
    can do other work while the sidecar takes the last sample and computes it (~6 ms)."""
    if ticket.sidecar.owner != os.getpid():
        raise MeterError(f"tracker {ticket.id} was started in process {ticket.sidecar.owner}, not this one")
    with _lock:
        return Stopping(ticket, _send(ticket.sidecar, {"op": "stop", "id": ticket.id}, wanted=True))


def sidecar_pid() -> int | None:
    """The pid of this process's running sidecar, if any."""
    with _lock:
        alive = _sidecar is not None and _sidecar.owner == os.getpid() and _sidecar.proc.poll() is None
        return _sidecar.proc.pid if alive and _sidecar is not None else None


def _current() -> _Sidecar:
    """This process's sidecar, started when there is none, it ended, or it is a forked parent's (call locked)."""
    global _sidecar
    if _sidecar is None or _sidecar.owner != os.getpid() or _sidecar.proc.poll() is not None:
        if _sidecar is not None and _sidecar.owner == os.getpid():
            _end(_sidecar.proc)  # it died: close our ends of its pipes
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "explaunch.measure.sidecar", str(os.getpid())],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                bufsize=0,  # raw pipes: a reply is read with a time limit (select), never from a hidden buffer
            )
        except OSError as ex:
            raise MeterError(f"cannot start the energy meter process: {ex}") from None
        _sidecar = _Sidecar(os.getpid(), proc)
    return _sidecar


def _send(sidecar: _Sidecar, message: dict[str, Any], *, wanted: bool) -> int:
    """Send a request (call locked); returns its number. The reply of a request not ``wanted`` is read and dropped
    on the way to a later one's (a failed start answers again when its tracker is stopped)."""
    proc = sidecar.proc
    assert proc.stdin is not None
    if proc.poll() is not None:
        raise MeterError(f"the energy meter process ended (exit code {proc.returncode})")
    try:
        proc.stdin.write(json.dumps(message).encode() + b"\n")
    except OSError as ex:
        raise MeterError(f"the energy meter process is gone: {ex}") from None
    request, sidecar.sent = sidecar.sent, sidecar.sent + 1
    if wanted:
        sidecar.wanted[request] = None
    return request


def _answer(sidecar: _Sidecar, request: int) -> dict[str, Any]:
    """The reply to ``request``, reading the replies before it (call locked). A sidecar that does not answer in
    time is ended, so that a late reply can never be taken for another request's."""
    while sidecar.answered <= request:
        reply = _reply(sidecar)
        if sidecar.answered in sidecar.wanted:
            sidecar.wanted[sidecar.answered] = reply
        sidecar.answered += 1
    answer = sidecar.wanted.pop(request)
    assert answer is not None
    if "error" in answer:
        raise MeterError(str(answer["error"]))
    return answer


def _reply(sidecar: _Sidecar) -> dict[str, Any]:
    proc = sidecar.proc
    assert proc.stdout is not None
    timeout_s = REPLY_TIMEOUT_S if sidecar.probed else PROBE_TIMEOUT_S
    line = _read_line(sidecar, timeout_s)
    if line is None:
        proc.kill()
        proc.wait()
        raise MeterError(f"the energy meter process did not answer in {timeout_s:g} s (ended it)")
    if not line:
        raise MeterError(f"the energy meter process ended (exit code {proc.wait()})")
    sidecar.probed = True
    try:
        reply: dict[str, Any] = json.loads(line)
    except ValueError:
        raise MeterError(f"the energy meter process answered {line[:200]!r}") from None
    return reply


def _read_line(sidecar: _Sidecar, timeout_s: float) -> bytes | None:
    """The sidecar's next line: b"" at end of file, None when it did not come within ``timeout_s``."""
    assert sidecar.proc.stdout is not None
    fd = sidecar.proc.stdout.fileno()
    deadline = time.monotonic() + timeout_s
    while b"\n" not in sidecar.received:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        chunk = os.read(fd, 65536)
        if not chunk:
            return b""
        sidecar.received += chunk
    line, _, sidecar.received = sidecar.received.partition(b"\n")
    return line + b"\n"


def _end(proc: subprocess.Popen[bytes]) -> None:
    """Close our ends of a sidecar's pipes: it exits on its stdin's end of file."""
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=0.1)


@atexit.register
def _end_at_exit() -> None:
    """Not waiting for the sidecar: one still probing the hardware (it reads its stdin only after) is killed, it
    has nothing left to measure (a resumed sweep with nothing to run exits at once)."""
    if _sidecar is not None and _sidecar.owner == os.getpid():
        _end(_sidecar.proc)
        if _sidecar.proc.poll() is None:
            _sidecar.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                _sidecar.proc.wait(timeout=1.0)


def _after_fork_in_child() -> None:
    """A forked child keeps none of its parent's sidecar: not the lock (another thread may have held it at the fork)
    nor the pipes (which would keep the parent's sidecar alive after the parent). It starts its own on first use."""
    global _lock, _sidecar
    _lock = threading.Lock()
    if _sidecar is not None:
        for pipe in (_sidecar.proc.stdin, _sidecar.proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()  # raw pipes: nothing buffered is written
    _sidecar = None


os.register_at_fork(after_in_child=_after_fork_in_child)
