"""A sampling thread that writes the job's resource time series to ``resources.csv`` and raises alerts.

Shaped like MLflow's system-metrics monitor: one thread, waiting on an ``Event`` between samples, so ``stop()``
returns within one interval; nothing raised inside a sample leaves the loop (it is counted in ``sample_errors``).
A first sample is taken at start and a last one at stop, so even a short job has a series.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
MIB = 1024 * 1024  # bytes: memory, IO and network columns are in MiB and end in _mib (disk_free_gb is 1e9 bytes)
CSV_FILE = "resources.csv"


@dataclass(frozen=True)
class AlertThresholds:
    """A sample above (or, for disk, below) a threshold adds one warning per metric to the job record."""

    memory_percent: float | None = 90.0  # system memory in use
    cpu_percent: float | None = None  # this job's processes, 100 = one core
    gpu_memory_percent: float | None = 95.0
    disk_free_gb: float | None = 1.0  # free space where the job writes


@dataclass
class ResourceSummary:
    samples: int = 0
    peak: dict[str, float] = field(default_factory=dict)
    mean: dict[str, float] = field(default_factory=dict)
    alerts: list[str] = field(default_factory=list)
    sample_errors: int = 0
    interval_s: float = 1.0

    def metrics(self) -> dict[str, float]:
        out = {f"resources_peak_{k}": v for k, v in self.peak.items()}
        out.update({f"resources_mean_{k}": v for k, v in self.mean.items()})
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "interval_s": self.interval_s,
            "peak": self.peak,
            "mean": self.mean,
            "alerts": self.alerts,
            "sample_errors": self.sample_errors,
        }


class _Gpus:
    """NVML handles for the GPUs this process may use; empty where NVML is absent."""

    def __init__(self) -> None:
        self.handles: list[tuple[int, Any]] = []
        try:
            import pynvml

            pynvml.nvmlInit()
            self.nvml: Any = pynvml
            self.handles = [(i, pynvml.nvmlDeviceGetHandleByIndex(i)) for i in range(pynvml.nvmlDeviceGetCount())]
        except Exception:
            self.nvml = None

    def sample(self) -> dict[str, float]:
        row: dict[str, float] = {}
        for index, handle in self.handles:
            nvml = self.nvml
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            row[f"gpu{index}_util_percent"] = float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            row[f"gpu{index}_memory_mib"] = memory.used / MIB
            row[f"gpu{index}_memory_percent"] = 100.0 * memory.used / memory.total
            row[f"gpu{index}_power_w"] = nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0
            row[f"gpu{index}_temperature_c"] = float(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU))
        return row

    def close(self) -> None:
        if self.nvml is not None:
            with contextlib.suppress(Exception):
                self.nvml.nvmlShutdown()


class ResourceSampler:
    """``start()`` / ``stop() -> ResourceSummary``; rows go to ``csv_path`` as they are taken."""

    def __init__(
        self, csv_path: Path, interval_s: float = 1.0, thresholds: AlertThresholds | None = None, pid: int | None = None
    ) -> None:
        import psutil

        self.csv_path = csv_path
        self.interval_s = interval_s
        self.thresholds = thresholds or AlertThresholds()
        self._psutil = psutil
        self._process = psutil.Process(pid)
        self._children: dict[int, Any] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._summary = ResourceSummary(interval_s=interval_s)
        self._sums: dict[str, float] = {}
        self._alerted: set[str] = set()
        self._columns: list[str] | None = None
        self._t0 = 0.0
        self._io0: Any = None
        self._net0: Any = None
        self._gpus: _Gpus | None = None

    def start(self) -> ResourceSampler:
        self._t0 = time.monotonic()
        self._io0 = self._safe(self._psutil.disk_io_counters)
        self._net0 = self._safe(self._psutil.net_io_counters)
        self._gpus = _Gpus()
        self._process.cpu_percent(None)  # primes the CPU counter: the first real reading covers one interval
        self._thread = threading.Thread(target=self._run, name="explaunch-resources", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> ResourceSummary:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval_s + 5)
        self._record_sample()  # the last sample, taken now
        if self._gpus is not None:
            self._gpus.close()
        count = max(self._summary.samples, 1)
        self._summary.mean = {k: v / count for k, v in self._sums.items()}
        return self._summary

    def _run(self) -> None:
        self._record_sample()
        while not self._stop.wait(self.interval_s):
            self._record_sample()

    @staticmethod
    def _safe(func: Any) -> Any:
        try:
            return func()
        except Exception:
            return None

    def _tree(self) -> list[Any]:
        """This process and its live children (kept between samples so their CPU counters stay primed)."""
        procs = [self._process]
        try:
            for child in self._process.children(recursive=True):
                kept = self._children.setdefault(child.pid, child)
                if kept is child:
                    child.cpu_percent(None)
                procs.append(kept)
        except self._psutil.Error:
            pass
        return procs

    def sample(self) -> dict[str, float]:
        ps = self._psutil
        cpu = rss = 0.0
        for proc in self._tree():
            try:
                cpu += proc.cpu_percent(None)
                rss += proc.memory_info().rss
            except ps.Error:
                continue
        memory = ps.virtual_memory()
        row = {
            "elapsed_s": time.monotonic() - self._t0,
            "cpu_percent": cpu,
            "rss_mib": rss / MIB,
            "system_cpu_percent": ps.cpu_percent(None),
            "system_memory_percent": float(memory.percent),
            "disk_free_gb": ps.disk_usage(str(self.csv_path.parent)).free / 1e9,
        }
        io, net = self._safe(ps.disk_io_counters), self._safe(ps.net_io_counters)
        if io is not None and self._io0 is not None:
            row["disk_read_mib"] = (io.read_bytes - self._io0.read_bytes) / MIB
            row["disk_write_mib"] = (io.write_bytes - self._io0.write_bytes) / MIB
        if net is not None and self._net0 is not None:
            row["net_sent_mib"] = (net.bytes_sent - self._net0.bytes_sent) / MIB
            row["net_recv_mib"] = (net.bytes_recv - self._net0.bytes_recv) / MIB
        if self._gpus is not None:
            row.update(self._gpus.sample())
        return row

    def _record_sample(self) -> None:
        try:
            row = self.sample()
            self._write(row)
            self._summarize(row)
            self._check_alerts(row)
        except Exception as ex:  # a sampler never takes the job down
            self._summary.sample_errors += 1
            if self._summary.sample_errors == 1:
                log.warning("resource sampling failed: %s: %s", type(ex).__name__, ex)

    def _write(self, row: dict[str, float]) -> None:
        new = self._columns is None
        columns = self._columns = self._columns or list(row)
        with self.csv_path.open("a", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow({k: round(v, 4) for k, v in row.items()})

    def _summarize(self, row: dict[str, float]) -> None:
        self._summary.samples += 1
        for key, value in row.items():
            if key == "elapsed_s":
                continue
            self._summary.peak[key] = max(self._summary.peak.get(key, value), value)
            self._sums[key] = self._sums.get(key, 0.0) + value

    def _check_alerts(self, row: dict[str, float]) -> None:
        limits = self.thresholds
        checks: list[tuple[str, float | None, float | None, bool]] = [
            ("system_memory_percent", row.get("system_memory_percent"), limits.memory_percent, True),
            ("cpu_percent", row.get("cpu_percent"), limits.cpu_percent, True),
            ("disk_free_gb", row.get("disk_free_gb"), limits.disk_free_gb, False),
        ]
        checks += [
            (k, v, limits.gpu_memory_percent, True)
            for k, v in row.items()
            if k.startswith("gpu") and k.endswith("_memory_percent")
        ]
        for name, value, limit, above in checks:
            if value is None or limit is None or name in self._alerted:
                continue
            if (value > limit) if above else (value < limit):
                self._alerted.add(name)
                word = "above" if above else "below"
                message = f"{name} {value:.1f} {word} the alert threshold {limit:g} at {row['elapsed_s']:.1f} s"
                self._summary.alerts.append(message)
                log.warning("resource alert: %s", message)
