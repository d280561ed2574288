"""Energy of a measurement window from hardware counters, every figure labelled with its source and scope.

Counters first: RAPL (CPU packages, DRAM) and NVML's total-energy counter (Volta and newer) integrate power in
hardware, so a window's energy is a difference of reads and does not depend on how often we sample. We still read
every ~0.2-1 s because (1) a RAPL package counter wraps every ~262 kJ, which two edge reads cannot see; (2) RAPL
measures whole packages, so each interval's energy is split by the job's share of the machine's busy CPU time in
that interval, which keeps jobs running side by side from adding up to more than the machine; (3) a GPU without an
energy counter only gives power, which we integrate.

A component we cannot read is absent from the result, its reason in ``WindowMeter.unavailable``: never a made-up
figure. This module runs in a small sidecar process: psutil, and pynvml only when no NVML object is given.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

POWERCAP_ROOT = Path("/sys/class/powercap")
PROC_ROOT = Path("/proc")
_ZONE_FOLDER = re.compile(r"intel-rapl:(\d+)(?::(\d+))?")
_NO_DRAM = "no readable dram RAPL subzone (many desktop CPUs and AMD expose none)"
_MIG_NOTE = "{}: a MIG partition has no energy reading of its own; this is its whole parent GPU, shared by others"
_GPU_COUNTER = "NVML nvmlDeviceGetTotalEnergyConsumption (mJ), last - first per device"
_GPU_POWER = "NVML nvmlDeviceGetPowerUsage (mW) at every read, trapezoid rule over the clock"


@dataclass(frozen=True)
class ComponentEnergy:
    """One component's energy over the window. ``scope`` says whose energy it is: ``apportioned`` is the job's share
    of ``machine_joules``; ``machine`` is a whole device that others may share (a MIG partition's parent GPU)."""

    joules: float
    source: str
    scope: str
    reads: int
    machine_joules: float | None = None
    share: float | None = None
    devices: dict[str, float] | None = None
    method: str = ""
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RaplZone:
    name: str
    path: Path
    max_range_uj: int
    package: str

    def read_uj(self) -> int:
        return int((self.path / "energy_uj").read_text())


def find_rapl_zones(root: Path = POWERCAP_ROOT) -> tuple[list[RaplZone], str | None]:
    """Package zones (intel-rapl:N named package-N) and their dram subzones (intel-rapl:N:M named dram); psys, core
    and uncore overlap the packages and are skipped. Returns (zones, reason), reason saying why none are usable.

    All or nothing per kind: a machine figure missing one package would be split as if it were the whole machine.
    Since Linux 5.10 (CVE-2020-8694) energy_uj is readable by root only, the usual reason on a shared cluster.
    """
    if not root.is_dir():
        return [], f"no powercap folder at {root}"
    packages: dict[str, str] = {}
    found: dict[str, list[RaplZone]] = {"package": [], "dram": []}
    broken: dict[str, str] = {}
    folders = [(m, f) for f in root.iterdir() if (m := _ZONE_FOLDER.fullmatch(f.name))]
    for match, folder in sorted(folders, key=lambda mf: (int(mf[0][1]), int(mf[0][2] or -1))):
        try:
            name = (folder / "name").read_text().strip()
        except OSError:
            continue
        kind = "package" if match[2] is None and name.startswith("package") else "dram" if name == "dram" else None
        if kind is None or (kind == "dram" and match[1] not in packages):
            continue
        packages.setdefault(match[1], name)
        try:
            max_range = int((folder / "max_energy_range_uj").read_text())
            zone = RaplZone(name, folder, max_range, packages[match[1]])
            zone.read_uj()
        except PermissionError:
            broken[kind] = f"{folder / 'energy_uj'} is not readable (root-only since Linux 5.10, CVE-2020-8694)"
        except (OSError, ValueError) as ex:
            broken[kind] = f"{folder.name} not readable: {type(ex).__name__}: {ex}"
        else:
            found[kind].append(zone)
    if "package" in broken:
        return [], broken["package"]
    if not found["package"]:
        return [], f"no RAPL package zone under {root}"
    return found["package"] + ([] if "dram" in broken else found["dram"]), None


def counter_delta(before: int, after: int, max_range: int) -> int:
    """Increase of a counter that runs 0..max_range then restarts at 0, with at most one wrap between the reads.

    No wrap: ``after - before``. A wrap: ``(max_range - before) + 1 + after``, the counter taken modulo
    ``max_range + 1``. The kernel's real step from max_range to 0 is one energy unit (about 61 µJ on Intel) rather
    than 1 µJ; the error is below a millijoule per ~262 kJ wrap. Two wraps between reads cannot be seen: read at
    least every few minutes.
    """
    if after >= before:
        return after - before
    return max(0, max_range - before) + 1 + after


def machine_busy_seconds(proc_root: Path = PROC_ROOT) -> float:
    """CPU time the whole machine spent busy since boot: user+nice+system+irq+softirq+steal from the first line of
    <proc_root>/stat, in USER_HZ. Idle and iowait are excluded; guest time is already inside user and nice."""
    fields = (proc_root / "stat").read_text().split("\n", 1)[0].split()
    if not fields or fields[0] != "cpu":
        raise ValueError(f"{proc_root / 'stat'} does not start with the 'cpu' line")
    user, nice, system, _idle, _iowait, irq, softirq, steal = ([int(v) for v in fields[1:9]] + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def process_tree_seconds(pid: int, exclude: AbstractSet[int] = frozenset()) -> float:
    """CPU time (user+system) of pid and its living descendants, plus each one's reaped children's time.

    A child's time moves into its parent's children_* fields when it is reaped, so the total carries on across
    exits. It drops where time leaves the tree (a process reparented to init, an auto-reaped child). ``exclude``
    pids (the meter's sidecar) are left out with their descendants. Raises psutil.NoSuchProcess if pid is gone.
    """
    if pid in exclude:
        return 0.0
    root = psutil.Process(pid)
    total = _own_and_reaped(root)
    descendants = root.children(recursive=True)
    parents: dict[int, int] = {}
    for child in descendants:
        try:
            parents[child.pid] = child.ppid()
        except psutil.Error:
            continue
    for child in descendants:
        if child.pid not in parents or _is_excluded(child.pid, pid, parents, exclude):
            continue
        try:
            total += _own_and_reaped(child)
        except psutil.Error:
            continue
    return total


def _own_and_reaped(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system + times.children_user + times.children_system)


def _is_excluded(pid: int, root: int, parents: dict[int, int], exclude: AbstractSet[int]) -> bool:
    for _ in range(len(parents) + 1):
        if pid == root:
            return False
        if pid in exclude:
            return True
        pid = parents.get(pid, root)
    return False


def select_gpus(nvml: Any, visible: str | None, gpu_ids: Sequence[int]) -> list[str]:
    """The NVML device UUIDs a job was given, without repeats.

    ``visible`` is CUDA_VISIBLE_DEVICES (None: all devices in NVML index order); entries are indices, GPU- UUIDs (or
    unique prefixes) or MIG- UUIDs. As CUDA does, the list ends at the first entry that names no device. Indices are
    NVML's (PCI bus) order, which is CUDA's only with CUDA_DEVICE_ORDER=PCI_BUS_ID. ``gpu_ids`` are CUDA ordinals
    into the visible list (empty: all of it).
    """
    every = [_uuid(nvml, nvml.nvmlDeviceGetHandleByIndex(i)) for i in range(nvml.nvmlDeviceGetCount())]
    listed = every if visible is None else _parse_visible(visible, every)
    for gpu_id in gpu_ids:
        if not 0 <= gpu_id < len(listed):
            raise ValueError(
                f"GPU id {gpu_id} is not visible: CUDA_VISIBLE_DEVICES={visible!r} leaves {len(listed)} device(s)"
            )
    return list(dict.fromkeys([listed[i] for i in gpu_ids] if gpu_ids else listed))


def _parse_visible(visible: str, every: list[str]) -> list[str]:
    listed: list[str] = []
    for entry in (e.strip() for e in visible.split(",")):
        matches = [u for u in every if u == entry] or [u for u in every if entry and u.startswith(entry)]
        if entry.isdigit() and int(entry) < len(every):
            listed.append(every[int(entry)])
        elif entry.startswith("MIG-"):
            listed.append(entry)
        elif entry.startswith("GPU-") and len(matches) == 1:
            listed.append(matches[0])
        else:
            break
    return listed


def _uuid(nvml: Any, handle: Any) -> str:
    uuid = nvml.nvmlDeviceGetUUID(handle)
    return uuid.decode() if isinstance(uuid, bytes) else str(uuid)


@dataclass
class _Rapl:
    """Per-interval RAPL sums. A read that fails in part is skipped: the next good one closes a longer interval."""

    zones: list[RaplZone]
    client_pid: int
    exclude: AbstractSet[int]
    proc_root: Path
    last: tuple[dict[Path, int], float, float] | None = None
    tree_high: float | None = None
    joules: dict[str, float] = field(default_factory=lambda: {"cpu": 0.0, "ram": 0.0})
    machine: dict[str, float] = field(default_factory=lambda: {"cpu": 0.0, "ram": 0.0})
    reads: int = 0
    error: str = ""

    def read(self) -> None:
        try:
            energy = {zone.path: zone.read_uj() for zone in self.zones}
            busy = machine_busy_seconds(self.proc_root)
        except (OSError, ValueError) as ex:
            self.error = f"read failed: {type(ex).__name__}: {ex}"
            return
        tree = self._tree_seconds()
        if tree is None:
            return
        if self.last is not None:
            self._add_interval(energy, busy, tree)
        self.last = (energy, busy, tree)
        self.reads += 1

    def _tree_seconds(self) -> float | None:
        """The client's CPU time, never below its highest reading so far: no second is ever counted twice. Once the
        client is gone its time stays where it was while the counters go on closing intervals."""
        try:
            now = process_tree_seconds(self.client_pid, self.exclude)
        except (psutil.Error, OSError) as ex:
            self.error = f"client process {self.client_pid} not readable: {type(ex).__name__}"
            return self.tree_high
        self.tree_high = now if self.tree_high is None else max(self.tree_high, now)
        return self.tree_high

    def _add_interval(self, energy: dict[Path, int], busy: float, tree: float) -> None:
        assert self.last is not None
        last_energy, last_busy, last_tree = self.last
        d_busy = busy - last_busy
        share = min(1.0, (tree - last_tree) / d_busy) if d_busy > 0 else 0.0
        for zone in self.zones:
            kind = _kind(zone)
            d_joules = counter_delta(last_energy[zone.path], energy[zone.path], zone.max_range_uj) / 1e6
            self.machine[kind] += d_joules
            self.joules[kind] += d_joules * share

    def result(self, kind: str) -> ComponentEnergy:
        names = ", ".join(z.name if kind == "cpu" else f"{z.package}/dram" for z in self.zones if _kind(z) == kind)
        machine, joules = self.machine[kind], self.joules[kind]
        share = joules / machine if machine > 0 else None
        method = f"RAPL energy_uj of {names} (powercap), each interval split by the job's share of busy CPU time"
        return ComponentEnergy(joules, "counter", "apportioned", self.reads, machine, share, method=method)


def _kind(zone: RaplZone) -> str:
    return "cpu" if zone.name == zone.package else "ram"


@dataclass
class _DeviceSeries:
    """One device's reads: the counter's first and last value, and the trapezoid integral of power."""

    first: float = 0.0
    last: float = 0.0
    last_t: float = 0.0
    integral: float = 0.0
    reads: int = 0

    def add(self, t: float, value: float) -> None:
        if self.reads:
            self.integral += (self.last + value) / 2 * (t - self.last_t)
        else:
            self.first = value
        self.last, self.last_t = value, t
        self.reads += 1


class _Gpu:
    """The job's physical GPUs (a MIG partition read through its parent), by counter if all have one, else power."""

    def __init__(self, nvml: Any, uuids: Sequence[str], owned: bool) -> None:
        self.nvml, self.owned = nvml, owned
        self.errors: list[str] = []
        self.nvml_error: Any = getattr(nvml, "NVMLError", Exception)
        self.handles: dict[str, Any] = {}
        self.mig: list[str] = []
        for uuid in dict.fromkeys(uuids):
            handle = nvml.nvmlDeviceGetHandleByUUID(uuid)
            if self._is_mig(uuid, handle):
                handle = nvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(handle)
                self.mig.append(uuid)
            self.handles.setdefault(_uuid(nvml, handle), handle)
        self.counter = self._all_read(nvml.nvmlDeviceGetTotalEnergyConsumption)
        if not self.counter and not self._all_read(nvml.nvmlDeviceGetPowerUsage):
            raise LookupError("neither an energy counter nor a power reading on the job's GPUs")
        self.series = {uuid: _DeviceSeries() for uuid in self.handles}

    def _is_mig(self, uuid: str, handle: Any) -> bool:
        try:
            return uuid.startswith("MIG-") or bool(self.nvml.nvmlDeviceIsMigDeviceHandle(handle))
        except (AttributeError, self.nvml_error):
            return False

    def _all_read(self, query: Callable[[Any], int]) -> bool:
        try:
            for handle in self.handles.values():
                query(handle)
        except self.nvml_error:
            return False
        return True

    def read(self, t: float) -> None:
        query = self.nvml.nvmlDeviceGetTotalEnergyConsumption if self.counter else self.nvml.nvmlDeviceGetPowerUsage
        for uuid, handle in self.handles.items():
            try:
                self.series[uuid].add(t, float(query(handle)) / 1000)
            except self.nvml_error as ex:
                self.errors.append(f"{uuid}: {ex}")

    def result(self) -> ComponentEnergy | str:
        if any(s.reads < 2 for s in self.series.values()):
            return f"a GPU was read fewer than twice in the window: {'; '.join(self.errors[-3:])}"
        devices = {u: s.last - s.first if self.counter else s.integral for u, s in self.series.items()}
        notes = [_MIG_NOTE.format(", ".join(self.mig))] if self.mig else []
        notes += [f"{len(self.errors)} NVML read error(s), e.g. {self.errors[0]}"] if self.errors else []
        if not self.counter:
            notes.append("no total-energy counter on this GPU (NVML has one from Volta on): power sampled instead")
        reads = min(s.reads for s in self.series.values())
        source, method = ("counter", _GPU_COUNTER) if self.counter else ("sampled", _GPU_POWER)
        scope, note = "machine" if self.mig else "devices", "; ".join(notes)
        return ComponentEnergy(sum(devices.values()), source, scope, reads, devices=devices, method=method, note=note)

    def close(self) -> None:
        if self.owned:
            with contextlib.suppress(self.nvml_error):
                self.nvml.nvmlShutdown()


def _open_gpu(nvml: Any | None, uuids: Sequence[str]) -> _Gpu | str:
    if not uuids:
        return "no GPU given to the job"
    owned = nvml is None
    if nvml is None:
        try:
            import pynvml

            pynvml.nvmlInit()
            nvml = pynvml
        except Exception as ex:  # no library, no driver, no GPU: all mean the same here
            return f"no NVML: {type(ex).__name__}: {ex}"
    try:
        return _Gpu(nvml, uuids, owned)
    except (LookupError, getattr(nvml, "NVMLError", LookupError)) as ex:
        if owned:
            with contextlib.suppress(Exception):
                nvml.nvmlShutdown()
        return f"NVML cannot read the job's GPUs: {type(ex).__name__}: {ex}"


class WindowMeter:
    """Energy of one job over one window: ``start()``, ``sample()`` from a thread every ~0.2-1 s, ``stop()``.

    Setup (finding zones, NVML handles) happens here so that ``start()`` is only the first edge's reads. ``sample()``
    and ``stop()`` never raise for a vanished process, an unreadable file or an NVML error: the read is skipped.
    """

    def __init__(
        self,
        *,
        client_pid: int,
        exclude_pids: AbstractSet[int] = frozenset(),
        powercap_root: Path = POWERCAP_ROOT,
        proc_root: Path = PROC_ROOT,
        nvml: Any | None = None,
        gpu_uuids: Sequence[str] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.unavailable: dict[str, str] = {}
        self._clock = clock
        self._lock = threading.Lock()
        self._t0: float | None = None
        self._t1: float | None = None
        self._result: dict[str, ComponentEnergy] | None = None
        zones, reason = find_rapl_zones(powercap_root)
        self._rapl = _Rapl(zones, client_pid, frozenset(exclude_pids), proc_root) if zones else None
        if reason is not None:
            self.unavailable["cpu"] = self.unavailable["ram"] = f"no RAPL: {reason}"
        elif not any(_kind(z) == "ram" for z in zones):
            self.unavailable["ram"] = _NO_DRAM
        gpu = _open_gpu(nvml, gpu_uuids)
        self._gpu = gpu if isinstance(gpu, _Gpu) else None
        if isinstance(gpu, str):
            self.unavailable["gpu"] = gpu

    @property
    def window_s(self) -> float:
        if self._t0 is None:
            return 0.0
        return (self._t1 if self._t1 is not None else self._clock()) - self._t0

    def start(self) -> None:
        with self._lock:
            if self._t0 is not None:
                raise RuntimeError("WindowMeter.start() called twice")
            self._t0 = self._read()

    def sample(self) -> None:
        with self._lock:
            if self._t0 is not None and self._t1 is None:
                self._read()

    def stop(self) -> dict[str, ComponentEnergy]:
        with self._lock:
            if self._t0 is None:
                raise RuntimeError("WindowMeter.stop() before start()")
            if self._result is None:
                self._t1 = self._read()
                self._result = self._collect()
            return dict(self._result)

    def _read(self) -> float:
        now = self._clock()
        if self._rapl is not None:
            self._rapl.read()
        if self._gpu is not None:
            self._gpu.read(now)
        return now

    def _collect(self) -> dict[str, ComponentEnergy]:
        result: dict[str, ComponentEnergy] = {}
        if self._rapl is not None:
            kinds = ["cpu"] + (["ram"] if "ram" not in self.unavailable else [])
            for kind in kinds:
                if self._rapl.reads >= 2:
                    result[kind] = self._rapl.result(kind)
                else:
                    self.unavailable[kind] = f"RAPL read fewer than twice in the window: {self._rapl.error}"
        if self._gpu is not None:
            gpu = self._gpu.result()
            self._gpu.close()
            if isinstance(gpu, str):
                self.unavailable["gpu"] = gpu
            else:
                result["gpu"] = gpu
        return result
