"""Resource limits that hold new launches: ``hydra.sweeper.limits.{memory_percent,cpu_percent,gpu_memory_percent,
disk_free_gb,poll_s}`` (:class:`hydra_plugins.explaunch_plugins.config.LimitsConf`).

While the machine is over one of the limits set, no new local job starts; jobs already running go on. With no limit
set nothing is sampled (not even psutil is imported). A limit that cannot be read here (``gpu_memory_percent``
without an NVIDIA GPU) is said once and ignored; reading the machine never fails the sweep.

How the sweeper uses it (local launches only: a SLURM job starts on another machine)::

    gate = LaunchGate(settings.limits, sweep_dir, say=log.info) if settings.limits else None   # once
    ...
    # before each batch (or job) is handed to the launcher
    if gate is not None:
        gate.wait_until_clear(should_stop=lambda: self.stop_reason is not None)
        if self.stop_reason is not None:
            ...  # Ctrl-C or a time limit while held: launch nothing
    ...
    # in the sweep record / summary: gate.held_s, gate.holds (and gate.holding, the reason, for a progress line)
    gate.close()                                    # at the end (releases NVML)

``wait_until_clear`` blocks the calling thread, reading the machine every ``poll_s`` (default 1 s) while held.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import time
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

LIMITS = ("memory_percent", "cpu_percent", "gpu_memory_percent", "disk_free_gb")
POLL_S = 1.0
CPU_WINDOW_S = 0.5  # the CPU load is the mean over at least this long (a shorter window is noise)

Reader = Callable[[Collection[str]], Mapping[str, float | None]]
"""Reads the named quantities of :data:`LIMITS`; None for one that cannot be read here."""

UNREADABLE = {
    "gpu_memory_percent": "no NVIDIA GPU or NVML here",
    "memory_percent": "psutil cannot read the memory here",
    "cpu_percent": "psutil cannot read the CPU load here",
    "disk_free_gb": "the sweep folder's disk cannot be read",
}


class MachineReader:
    """The machine's readings, for :class:`LaunchGate`: used memory % (psutil), CPU load % over all cores since the
    last read (at least :data:`CPU_WINDOW_S`; its own baseline, not psutil's shared one), the busiest GPU's used
    memory % (NVML, every GPU), free GB on the disk of ``folder`` (or of its nearest existing parent). Never raises."""

    def __init__(self, folder: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.folder = folder
        self.clock = clock
        self._cpu_last: tuple[float, float, float] | None = None  # (clock, busy, total) at the last CPU read
        self._cpu_value: float | None = None
        self._nvml: Any = None
        self._nvml_tried = False
        self._cpu_sample()  # the baseline of the first reading

    def __call__(self, names: Collection[str]) -> dict[str, float | None]:
        readers: dict[str, Callable[[], float | None]] = {
            "memory_percent": self.memory_percent,
            "cpu_percent": self.cpu_percent,
            "gpu_memory_percent": self.gpu_memory_percent,
            "disk_free_gb": self.disk_free_gb,
        }
        out: dict[str, float | None] = {}
        for name in names:
            try:
                out[name] = readers[name]()
            except Exception:
                out[name] = None
        return out

    def memory_percent(self) -> float | None:
        import psutil

        return float(psutil.virtual_memory().percent)

    def _cpu_sample(self) -> tuple[float, float, float] | None:
        try:
            import psutil

            times = psutil.cpu_times()
        except Exception:
            return None
        total = sum(times)
        if sys.platform.startswith("linux"):  # guest time is counted in user time too
            total -= getattr(times, "guest", 0.0) + getattr(times, "guest_nice", 0.0)
        idle = times.idle + getattr(times, "iowait", 0.0)
        sample = (self.clock(), total - idle, total)
        if self._cpu_last is None:
            self._cpu_last = sample
        return sample

    def cpu_percent(self) -> float | None:
        last = self._cpu_last
        if last is None:
            return None
        if self._cpu_value is None:  # the first reading waits out the rest of its window
            time.sleep(max(0.0, CPU_WINDOW_S - (self.clock() - last[0])))
        elif self.clock() - last[0] < CPU_WINDOW_S:
            return self._cpu_value  # too soon for a new window: the last one's
        sample = self._cpu_sample()
        if sample is None:
            return None
        busy, total = sample[1] - last[1], sample[2] - last[2]
        self._cpu_last = sample
        self._cpu_value = min(100.0, max(0.0, 100.0 * busy / total)) if total > 0 else 0.0
        return self._cpu_value

    def gpu_memory_percent(self) -> float | None:
        if not self._nvml_tried:
            self._nvml_tried = True
            try:
                import pynvml

                pynvml.nvmlInit()
                self._nvml = pynvml
            except Exception:
                self._nvml = None
        nvml = self._nvml
        if nvml is None:
            return None
        used: list[float] = []
        for index in range(int(nvml.nvmlDeviceGetCount())):
            with contextlib.suppress(Exception):  # a GPU that cannot be read (MIG, lost) leaves the others
                memory = nvml.nvmlDeviceGetMemoryInfo(nvml.nvmlDeviceGetHandleByIndex(index))
                if memory.total > 0:
                    used.append(100.0 * memory.used / memory.total)
        return max(used) if used else None

    def disk_free_gb(self) -> float | None:
        folder = self.folder.absolute()
        while not folder.exists() and folder.parent != folder:  # the sweep folder may not be made yet
            folder = folder.parent
        return shutil.disk_usage(folder).free / 1e9

    def close(self) -> None:
        if self._nvml is not None:
            with contextlib.suppress(Exception):
                self._nvml.nvmlShutdown()
            self._nvml = None


def describe(name: str, value: float, limit: float) -> str:
    """``memory 93.1% > limit 90%``; ``disk free 3.2 GB < limit 10 GB``."""
    if name == "disk_free_gb":
        return f"disk free {value:.1f} GB < limit {limit:g} GB"
    label = {"memory_percent": "memory", "cpu_percent": "cpu", "gpu_memory_percent": "gpu memory"}[name]
    return f"{label} {value:.1f}% > limit {limit:g}%"


def is_over(name: str, value: float, limit: float) -> bool:
    return value < limit if name == "disk_free_gb" else value > limit


class LaunchGate:
    """Holds new launches while the machine is over a limit. ``limits``: the limits set (``{name: value}``, names of
    :data:`LIMITS`, and ``poll_s``); ``say``: one line for the user (log.info); ``read``: the machine's readings
    (a :class:`MachineReader` of ``folder`` unless given); ``clock``/``sleep``: time (fakes in tests)."""

    def __init__(
        self,
        limits: Mapping[str, float],
        folder: Path,
        say: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
        read: Reader | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        unknown = [name for name in limits if name not in (*LIMITS, "poll_s")]
        if unknown:
            raise ValueError(f"unknown limit {', '.join(unknown)}; known: {', '.join((*LIMITS, 'poll_s'))}")
        self.limits = {name: float(limits[name]) for name in LIMITS if limits.get(name) is not None}
        self.poll_s = float(limits.get("poll_s") or POLL_S)
        self.say = say
        self.clock = clock
        self.sleep = sleep
        self._reader: MachineReader | None = None
        if read is None and self.limits:
            self._reader = MachineReader(folder)
            read = self._reader
        self.read = read
        self.holds = 0  # times launches were held
        self.holding: str | None = None  # why, while held (for a progress line)
        self._held_s = 0.0
        self._read_failed = False

    @property
    def held_s(self) -> float:
        """Seconds launches were held, over every wait so far."""
        return self._held_s

    def over(self) -> list[str]:
        """The limits the machine is over now, described; a limit that cannot be read is said once and dropped."""
        if not self.limits or self.read is None:
            return []
        try:
            readings = self.read(list(self.limits))
        except Exception as ex:  # a reader should not raise; the sweep goes on unheld if one does
            if not self._read_failed:
                self._read_failed = True
                self.say(f"cannot read the machine for hydra.sweeper.limits ({type(ex).__name__}: {ex}); not held")
            return []
        found = []
        for name, limit in list(self.limits.items()):
            value = readings.get(name)
            if value is None:
                del self.limits[name]
                self.say(f"hydra.sweeper.limits.{name} ignored: it cannot be read ({UNREADABLE[name]})")
                continue
            if is_over(name, value, limit):
                found.append(describe(name, value, limit))
        return found

    def wait_until_clear(self, should_stop: Callable[[], bool]) -> float:
        """Block while the machine is over a limit (reading it every ``poll_s``) or until ``should_stop()``; say once
        when holding starts (with the readings) and once when it resumes. Returns the seconds held (0.0 when not)."""
        if not self.limits:
            return 0.0
        started: float | None = None
        while True:
            over = self.over()
            if not over:
                break
            if started is None:
                started = self.clock()
                self.holds += 1
                self.holding = "; ".join(over)
                self.say(f"holding new jobs: {self.holding}")
            if should_stop():
                break
            self.sleep(self.poll_s)
        if started is None:
            return 0.0
        held = max(self.clock() - started, 0.0)
        self._held_s += held
        self.holding = None
        if not over:
            self.say(f"resuming new jobs after {held:.0f} s held")
        return held

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
