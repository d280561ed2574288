"""The energy meter sidecar (``python -m explaunch.measure.sidecar <pid>``, started by its client
:mod:`explaunch.measure.meter`): it answers the client's start and stop requests, one JSON line each, until the
client's end of its stdin closes.

It runs codecarbon's trackers in ``tracking_mode="process"`` pointed at the client's pid (and its children), and a
counter meter (:class:`explaunch.measure.counters.WindowMeter`) per window; several may run at once (a job's tracker
and a measured region's inside it). One daemon thread reads the counters of every running window at its interval; a
window's first and last reads are taken when its start and stop requests arrive.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from explaunch import _compat
from explaunch.measure.counters import WindowMeter
from explaunch.measure.energy import codecarbon_figures, combine
from explaunch.measure.gpus import select_gpus

CHILDREN_TTL_S = 0.5  # how long the client's list of child processes is reused between samples (see Client)


class _Window:
    """One tracker in the sidecar: codecarbon (modelled components, carbon intensity) and the counter meter."""

    def __init__(self, client_pid: int, message: dict[str, Any], nvml: Any) -> None:
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
