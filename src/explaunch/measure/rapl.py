"""RAPL energy counters (CPU packages and their DRAM) over a window, split by the job's share of the machine.

RAPL integrates power in hardware, so a window's energy is a difference of reads and does not depend on how often we
sample. We still read every ~0.2-1 s because (1) a package counter wraps every ~262 kJ, which two edge reads cannot
see; (2) RAPL measures whole packages, so each interval's energy is split by the job's share of the machine's busy
CPU time in that interval, which keeps jobs running side by side from adding up to more than the machine. Used by
:class:`explaunch.measure.counters.WindowMeter`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from explaunch.measure.energy import ComponentEnergy

POWERCAP_ROOT = Path("/sys/class/powercap")
PROC_ROOT = Path("/proc")
_ZONE_FOLDER = re.compile(r"intel-rapl:(\d+)(?::(\d+))?")


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


@dataclass
class RaplWindow:
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
            kind = zone_kind(zone)
            d_joules = counter_delta(last_energy[zone.path], energy[zone.path], zone.max_range_uj) / 1e6
            self.machine[kind] += d_joules
            self.joules[kind] += d_joules * share

    def result(self, kind: str) -> ComponentEnergy:
        names = ", ".join(z.name if kind == "cpu" else f"{z.package}/dram" for z in self.zones if zone_kind(z) == kind)
        machine, joules = self.machine[kind], self.joules[kind]
        share = joules / machine if machine > 0 else None
        method = f"RAPL energy_uj of {names} (powercap), each interval split by the job's share of busy CPU time"
        return ComponentEnergy(joules, "counter", "apportioned", self.reads, machine, share, method=method)


def zone_kind(zone: RaplZone) -> str:
    return "cpu" if zone.name == zone.package else "ram"
