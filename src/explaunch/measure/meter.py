"""The energy meters in a sidecar process, measuring the process that started it: hardware counters (RAPL, NVML,
:mod:`explaunch.measure.counters`) read at each window's edges and every ``sample_interval`` between, and codecarbon
for what no counter covers and for the grid's carbon intensity.

Why: codecarbon samples from two ``threading.Timer`` threads. Inside a job's process each sample walks ``/proc``
through psutil, and every read releases and retakes the GIL; a pure-Python job thread then loses the GIL at each
read (a convoy), about 2-3 % of its speed although the sampler itself uses ~5 ms of CPU a second (benchmark B6). In
a separate process the sampler takes nothing from the job but a share of another core.

One sidecar per measured process, started on first use (``python -m explaunch.measure.meter <pid>``) and alive as
long as that process: it exits when its stdin closes, so a killed worker leaves no sidecar behind; a forked child
starts its own. It runs codecarbon's trackers in ``tracking_mode="process"`` pointed at the client's pid (and its
children); several may run at once (a job's tracker and a measured region's inside it). One daemon thread reads the
counters of every running window at its interval; a window's first and last reads are taken when its start and stop
requests arrive (the client synchronizes its GPU right before sending them). Requests and replies are
JSON lines, one reply per request, in order (a lock: trackers may live in different threads); a start's reply is
read before the next request's rather than awaited. Every reply is awaited with a time limit: a sidecar that hangs
is ended and its trackers read as errors, never as a hang.
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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from explaunch import _compat

PROBE_TIMEOUT_S = 120.0  # a sidecar's first reply: it imports codecarbon and probes the hardware first (~0.4 s)
REPLY_TIMEOUT_S = 30.0  # any later reply (a tracker's start or stop takes milliseconds)
CHILDREN_TTL_S = 0.5  # how long the client's list of child processes is reused between samples (see Client)


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
                [sys.executable, "-m", "explaunch.measure.meter", str(os.getpid())],
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


# ---- the sidecar -----------------------------------------------------------------------------------------------
class _Window:
    """One tracker in the sidecar: codecarbon (modelled components, carbon intensity) and the counter meter."""

    def __init__(self, client_pid: int, message: dict[str, Any], nvml: Any) -> None:
        from explaunch.measure.counters import WindowMeter

        self.interval = float(message.get("interval", 0.5))
        self.sample_interval = float(message.get("sample_interval", 0.2))
        self.codecarbon, self.codecarbon_scope = _new_tracker(client_pid, message)
        gpus = message.get("gpus")
        self.gpu_error: str | None = None
        uuids: list[str] = []
        if gpus is not None:
            uuids, self.gpu_error = _job_gpu_uuids(nvml, gpus)
        self.counters = WindowMeter(
            client_pid=client_pid,
            exclude_pids={os.getpid()},
            powercap_root=Path(message.get("powercap_root") or "/sys/class/powercap"),
            nvml=nvml if uuids else None,
            gpu_uuids=uuids,
        )
        self.next_sample = 0.0

    def start(self) -> None:
        self.codecarbon.start()
        self.counters.start()
        self.next_sample = time.monotonic() + self.sample_interval

    def stop(self) -> dict[str, Any] | None:
        from explaunch.measure.energy import codecarbon_figures, combine

        counted = self.counters.stop()
        window_s = self.counters.window_s
        self.codecarbon.stop()
        modelled = codecarbon_figures(self.codecarbon, self.interval, self.codecarbon_scope)
        unavailable = dict(self.counters.unavailable)
        if self.gpu_error is not None:
            unavailable["gpu"] = self.gpu_error
        if not counted and modelled is None:
            return None
        reading = combine(window_s, {k: v.to_dict() for k, v in counted.items()}, unavailable, modelled)
        return reading.fields()


def _job_gpu_uuids(nvml: Any, gpus: dict[str, Any]) -> tuple[list[str], str | None]:
    """The job's GPUs as NVML UUIDs, or why there are none."""
    from explaunch.measure.counters import select_gpus

    if nvml is None:
        return [], "no NVML (no NVIDIA driver or GPU here)"
    try:
        return select_gpus(nvml, gpus.get("visible"), gpus.get("ids") or []), None
    except Exception as ex:  # NVMLError or a GPU id that is not visible
        return [], f"{type(ex).__name__}: {ex}"


def _init_nvml() -> Any:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no driver, no GPU, no library: GPUs read as unavailable
        return None
    return pynvml


def _sample_forever(windows: dict[int, _Window], lock: threading.Lock) -> None:
    """Read every running window's counters at its interval (a RAPL counter wraps every few minutes at full power:
    reads in between keep each wrap countable, and CPU shares are taken per interval). Never raises."""
    _lowest_priority()
    while True:
        with lock:
            now = time.monotonic()
            due = [w for w in windows.values() if w.next_sample <= now]
            for window in due:
                with contextlib.suppress(Exception):
                    window.counters.sample()
                window.next_sample = now + window.sample_interval
            wake = min((w.next_sample for w in windows.values()), default=now + 0.5)
        time.sleep(max(0.01, wake - time.monotonic()))


def serve(client_pid: int) -> None:
    """Answer the client's requests until its end of stdin closes (it exited or was killed)."""
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever else is printed here (codecarbon, warnings) must not land in the replies
    sys.stdout = sys.stderr
    os.nice(5)  # answers to the client can wait a moment; the job's own threads should not
    # codecarbon samples from threading.Timer threads, each started by the one before; the first by start(). Started
    # from a thread at the lowest priority, they all run at it (Linux: a thread inherits its creator's nice value):
    # a sample waits for a free core rather than interrupting the job's threads. The counters' sampler too.
    sampling = ThreadPoolExecutor(1, "sampling", initializer=_lowest_priority)
    _cpu_model_from_proc()
    probe, _ = _new_tracker(client_pid, {})  # the hardware probe, once, before the first request
    sampling.submit(probe.start).result()
    probe.stop()
    nvml = _init_nvml()
    windows: dict[int, _Window] = {}
    lock = threading.Lock()
    # a daemon thread: the sidecar must exit when its client's stdin closes, whatever the sampler is doing
    threading.Thread(target=_sample_forever, args=(windows, lock), name="counters", daemon=True).start()
    failed: dict[int, str] = {}  # trackers that did not start: their stop answers why (the start may not be awaited)
    for line in sys.stdin:
        message = json.loads(line)
        try:
            if message["op"] == "start":
                try:
                    window = _Window(client_pid, message, nvml)
                    with lock:  # the edge read, right when asked (the client synchronized its GPU before)
                        sampling.submit(window.start).result()
                        windows[message["id"]] = window
                except Exception as ex:
                    failed[message["id"]] = f"{type(ex).__name__}: {ex}"
                    raise
                reply: dict[str, Any] = {"ok": True}
            elif message["id"] in failed:
                reply = {"error": f"the tracker did not start: {failed.pop(message['id'])}"}
            elif message["id"] not in windows:
                reply = {"error": f"tracker {message['id']} is not running in this energy meter process"}
            else:
                with lock:
                    window = windows.pop(message["id"])
                reply = {"reading": window.stop()}
        except Exception as ex:  # one tracker failing must not end the meter
            reply = {"error": f"{type(ex).__name__}: {ex}"}
        replies.write(json.dumps(reply) + "\n")


def proc_cpu_model(cpuinfo_text: str) -> str | None:
    """The CPU's brand string as Linux lists it ("model name" in /proc/cpuinfo, x86), None when it is not there."""
    for line in cpuinfo_text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            return value.strip()
    return None


def _cpu_model_from_proc() -> None:
    """codecarbon finds the CPU's TDP from its model, which it asks py-cpuinfo for (``detect_cpu_model``, its only
    use of py-cpuinfo). py-cpuinfo runs itself in a subprocess that reads CPUID and times the clock, about 1 s of a
    busy core per sidecar (every joblib worker and every SLURM job starts one), to give back the brand string that
    Linux already lists in /proc/cpuinfo (the kernel reads the same CPUID leaves). Where /proc/cpuinfo has it, the
    sidecar's py-cpuinfo answers that alone; elsewhere (ARM lists no model name) py-cpuinfo runs as it is.
    tests/unit/test_energy.py checks both give the same model here."""
    try:
        model = proc_cpu_model(Path("/proc/cpuinfo").read_text())
    except OSError:
        return
    if model is not None:
        _compat.answer_cpu_model(model)


def _lowest_priority() -> None:
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


def _new_tracker(client_pid: int, message: dict[str, Any]) -> tuple[Any, str]:
    """A codecarbon tracker of the client's processes, and the scope its modelled CPU and RAM figures have:
    ``process`` where its meters could be pointed at the client (see :mod:`explaunch._compat`), else ``machine``
    (codecarbon's public machine mode; the record's ``scope`` and ``method`` say so)."""
    if _compat.codecarbon_retargetable():
        tracker = _tracker("process", message)
        if _measure_client(tracker, client_pid):
            return tracker, "process"
    return _tracker("machine", message), "machine"


def _tracker(mode: str, message: dict[str, Any]) -> Any:
    import logging

    from codecarbon import OfflineEmissionsTracker
    from codecarbon.output_methods.base_output import OutputMethod

    logging.getLogger("codecarbon").setLevel(logging.ERROR)
    output: dict[str, Any] = {"output_methods": []}  # the job record keeps the figures
    if message.get("csv"):
        csv = Path(message["csv"])
        output = {"output_methods": [OutputMethod.CSV], "output_dir": str(csv.parent), "output_file": csv.name}
    return OfflineEmissionsTracker(
        country_iso_code=message.get("country", "USA"),
        measure_power_secs=float(message.get("interval", 1.0)),
        tracking_mode=mode,
        log_level="error",
        allow_multiple_runs=True,
        project_name="explaunch",
        **output,
    )


def _measure_client(tracker: Any, client_pid: int) -> bool:
    """Point a tracker's CPU and RAM meters at the client process and its children, less this sidecar (a child of
    the client too), before ``start()`` takes the first CPU times; False where this codecarbon does not allow it
    (:mod:`explaunch._compat`). tests/unit/test_energy.py checks that a busy client reads as busy and an idle one as
    idle.
    """
    import psutil

    sidecar = os.getpid()

    class Client(psutil.Process):  # type: ignore[misc]
        """The client, whose children exclude this sidecar. Listing children reads every process's
        ``/proc/<pid>/stat`` (psutil's ppid map: ~0.5 ms with 70 processes, several ms on a busy node), and a
        sample asks three times (CPU times, RAM, the 1 s power monitor): the list is kept for CHILDREN_TTL_S."""

        listed: tuple[float, bool, list[psutil.Process]] = (-1.0, False, [])

        def children(self, recursive: bool = False) -> list[psutil.Process]:
            at, was_recursive, kids = self.listed
            now = time.monotonic()
            if was_recursive != recursive or now - at > CHILDREN_TTL_S:
                kids = [c for c in super().children(recursive) if c.pid != sidecar]
                self.listed = (now, recursive, kids)
            return list(kids)

    meters = _compat.codecarbon_meters(tracker)
    if meters is None:
        return False
    client = Client(client_pid)
    return _compat.retarget_meters(meters, client_pid, client, lambda: _memories(client.children(recursive=True)))


def _memories(processes: list[Any]) -> list[int]:
    """Resident memory of each process still there (a child may end between the listing and the read)."""
    import psutil

    sizes = []
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            sizes.append(process.memory_info().rss)
    return sizes


if __name__ == "__main__":
    serve(int(sys.argv[1]))
