"""codecarbon in a sidecar process, measuring the process that started it.

Why: codecarbon samples from two ``threading.Timer`` threads. Inside a job's process each sample walks ``/proc``
through psutil, and every read releases and retakes the GIL; a pure-Python job thread then loses the GIL at each
read (a convoy), about 2-3 % of its speed although the sampler itself uses ~5 ms of CPU a second (benchmark B6). In
a separate process the sampler takes nothing from the job but a share of another core.

One sidecar per measured process, started on first use (``python -m explaunch.measure.meter <pid>``) and alive as
long as that process: it exits when its stdin closes, so a killed worker leaves no sidecar behind. It runs
codecarbon's trackers in ``tracking_mode="process"`` pointed at the client's pid (and its children); several may
run at once (a job's tracker and a measured region's inside it). Requests and replies are JSON lines.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

_lock = threading.Lock()
_sidecar: tuple[int, subprocess.Popen[str]] | None = None  # (the pid that started it, the process)
_next_id = 0


class MeterError(RuntimeError):
    pass


def _process() -> subprocess.Popen[str]:
    """This process's sidecar, started when there is none (or a forked child inherited its parent's)."""
    global _sidecar
    if _sidecar is None or _sidecar[0] != os.getpid() or _sidecar[1].poll() is not None:
        if _sidecar is not None and _sidecar[0] == os.getpid():
            _close(_sidecar[1])  # it died
        proc = subprocess.Popen(
            [sys.executable, "-m", "explaunch.measure.meter", str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        _sidecar = (os.getpid(), proc)
        atexit.register(_close, proc)
    return _sidecar[1]


def _close(proc: subprocess.Popen[str]) -> None:
    """At exit: end the sidecar (its stdin closes) and close our ends of its pipes. Not waiting for it: one still
    probing the hardware ends by itself right after (a resumed sweep with nothing to run exits at once)."""
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=0.1)


def prestart() -> None:
    """Start the sidecar now, without waiting: it imports codecarbon and probes the hardware (~2 s) meanwhile."""
    with _lock:
        _process()


def request(message: dict[str, Any]) -> dict[str, Any]:
    with _lock:
        proc = _process()
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(json.dumps(message) + "\n")
            proc.stdin.flush()
            line = proc.stdout.readline()
        except OSError as ex:
            raise MeterError(f"the energy meter process is gone: {ex}") from None
        if not line:
            raise MeterError(f"the energy meter process ended (exit code {proc.poll()})")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise MeterError(str(reply["error"]))
        return reply


def start(country_iso_code: str, measure_power_secs: float, csv_path: str | None) -> int:
    global _next_id
    with _lock:
        _next_id += 1
        tracker_id = _next_id
    request(
        {
            "op": "start",
            "id": tracker_id,
            "country": country_iso_code,
            "interval": measure_power_secs,
            "csv": csv_path,
        }
    )
    return tracker_id


def stop(tracker_id: int) -> dict[str, Any] | None:
    """The reading's fields (see explaunch.measure.energy.EnergyReading), None when codecarbon recorded none."""
    reading: dict[str, Any] | None = request({"op": "stop", "id": tracker_id}).get("reading")
    return reading


# ---- the sidecar -----------------------------------------------------------------------------------------------
def _new_tracker(pid: int, message: dict[str, Any]) -> Any:
    import logging

    from codecarbon import OfflineEmissionsTracker
    from codecarbon.output_methods.base_output import OutputMethod

    logging.getLogger("codecarbon").setLevel(logging.ERROR)
    output: dict[str, Any] = {"output_methods": []}  # the job record keeps the figures
    if message.get("csv"):
        csv = Path(message["csv"])
        output = {"output_methods": [OutputMethod.CSV], "output_dir": str(csv.parent), "output_file": csv.name}
    tracker = OfflineEmissionsTracker(
        country_iso_code=message.get("country", "USA"),
        measure_power_secs=float(message.get("interval", 1.0)),
        tracking_mode="process",
        log_level="error",
        allow_multiple_runs=True,
        project_name="explaunch",
        **output,
    )
    # codecarbon measures the process it runs in (CPU: psutil.Process(), RAM: os.getpid()) and its children; point
    # the meters at the client and its children but this sidecar (a child of the client too). Private attributes of
    # codecarbon 3.3.x (pinned), checked by tests/unit/test_energy.py.
    tracker._ensure_hardware_ready()
    for hardware in tracker._hardware:
        kind = type(hardware).__name__
        if kind == "CPU":
            hardware._pid = pid
            hardware._process = _client_process(pid)
            hardware._last_cpu_times = {}
            hardware._last_measurement_time = None
        elif kind == "RAM":
            hardware._pid = pid
            hardware._get_children_memories = lambda: [c.memory_info().rss for c in _client_process(pid).children(True)]
    return tracker


def _client_class() -> Any:
    import psutil

    class Client(psutil.Process):  # type: ignore[misc]
        """The measured process; its children without this sidecar."""

        def children(self, recursive: bool = False) -> list[psutil.Process]:
            return [c for c in super().children(recursive) if c.pid != os.getpid()]

    return Client


def _client_process(pid: int) -> Any:
    return _client_class()(pid)


def serve(pid: int) -> None:
    from explaunch.measure.energy import reading_from

    os.nice(5)  # sampling can wait a moment; the job's own threads should not
    trackers: dict[int, Any] = {}
    with _quiet():  # the hardware probe once, before the first request
        tracker = _new_tracker(pid, {})
        tracker.start()
        tracker.stop()
    for line in sys.stdin:
        message = json.loads(line)
        try:
            if message["op"] == "start":
                with _quiet():
                    tracker = _new_tracker(pid, message)
                    tracker.start()
                trackers[message["id"]] = tracker
                reply: dict[str, Any] = {"ok": True}
            elif message["id"] not in trackers:
                reply = {"error": f"tracker {message['id']} is not running here (the meter process was restarted)"}
            else:
                tracker = trackers.pop(message["id"])
                with _quiet():
                    tracker.stop()
                reading = reading_from(tracker)
                reply = {"reading": None if reading is None else reading.fields()}
        except Exception as ex:  # one tracker failing must not end the meter
            reply = {"error": f"{type(ex).__name__}: {ex}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


class _quiet:
    """codecarbon prints to stdout in places; stdout is the reply channel here."""

    def __enter__(self) -> None:
        self.stdout = sys.stdout
        sys.stdout = sys.stderr

    def __exit__(self, *exc: object) -> None:
        sys.stdout = self.stdout


if __name__ == "__main__":
    serve(int(sys.argv[1]))
