"""Counter-based energy windows, on a machine with no RAPL and no GPU: a fake powercap tree and a fake /proc/stat in
tmp_path, and an NVML stand-in following nvidia-ml-py's API (millijoules, milliwatts, NVMLError), all passed in as
parameters. Processes are real: children burn CPU and are frozen with SIGSTOP at each edge, so their CPU time is
fixed when the meter reads it and every expected figure is exact."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from explaunch.measure.counters import WindowMeter
from explaunch.measure.gpus import select_gpus
from explaunch.measure.rapl import counter_delta, find_rapl_zones, machine_busy_seconds, process_tree_seconds

MAX_UJ = 262_143_328_850
HZ = os.sysconf("SC_CLK_TCK")
BURN = "while True: pass"
SPAWN_A_BURNING_CHILD = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {BURN!r}])"


class FakePowercap:
    """Laid out like /sys/class/powercap: a flat folder of zones, subzones named <zone>:<n>, a control folder."""

    def __init__(self, root: Path, packages: int = 2, dram: bool = True) -> None:
        self.root = root
        (root / "intel-rapl").mkdir(parents=True)
        (root / "intel-rapl" / "enabled").write_text("1\n")
        for p in range(packages):
            self.zone(f"intel-rapl:{p}", f"package-{p}")
            self.zone(f"intel-rapl:{p}:0", "core")
            if dram:
                self.zone(f"intel-rapl:{p}:1", "dram")
        self.zone(f"intel-rapl:{packages}", "psys")

    def zone(self, folder: str, name: str) -> None:
        (self.root / folder).mkdir()
        (self.root / folder / "name").write_text(name + "\n")
        (self.root / folder / "max_energy_range_uj").write_text(f"{MAX_UJ}\n")
        self.set(folder, 5_000_000)

    def set(self, folder: str, uj: int) -> None:
        (self.root / folder / "energy_uj").write_text(f"{uj}\n")

    def add(self, folder: str, joules: float) -> None:
        uj = int((self.root / folder / "energy_uj").read_text()) + round(joules * 1e6)
        self.set(folder, uj % (MAX_UJ + 1))

    def add_all(self, package: float, dram: float = 0.0, psys: float = 1000.0) -> None:
        """Every package gets ``package`` joules, every dram ``dram``; psys (the whole platform) gets more."""
        for folder in sorted(f.name for f in self.root.glob("intel-rapl:*")):
            name = (self.root / folder / "name").read_text().strip()
            joules = {"dram": dram, "psys": psys, "core": package / 2}.get(name, package)
            self.add(folder, joules)


class FakeStat:
    """<root>/stat whose busy time the test sets; idle, iowait and guest move too but must not count."""

    def __init__(self, root: Path) -> None:
        self.path = root / "stat"
        root.mkdir(parents=True, exist_ok=True)
        self.busy = 1_000_000
        self.write()

    def advance(self, jiffies: int) -> None:
        self.busy += jiffies
        self.write()

    def write(self) -> None:
        user, system = self.busy // 2, self.busy - self.busy // 2
        idle = self.busy * 3
        line = f"cpu  {user} 0 {system} {idle} {idle // 7} 0 0 0 {user // 3} 0"
        self.path.write_text(f"{line}\ncpu0 {line[5:]}\nintr 12345\nctxt 678\n")


class FakeNvml:
    """nvidia-ml-py's calls as the meter uses them. Handles are ("gpu", index) or ("mig", uuid); like real NVML,
    a MIG partition's handle has no energy or power reading of its own."""

    class NVMLError(Exception):
        pass

    def __init__(self, gpus: int = 2, energy_supported: bool = True, migs: dict[str, int] | None = None) -> None:
        self.uuids = [f"GPU-{i}bcd-fake" for i in range(gpus)]
        self.energy_supported = energy_supported
        self.energy_mj = [1_000_000 * (i + 1) for i in range(gpus)]
        self.power_mw = [100_000] * gpus
        self.migs = migs or {}
        self.failing_reads = 0

    def nvmlDeviceGetCount(self) -> int:
        return len(self.uuids)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> tuple[str, int]:
        return ("gpu", index)

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> tuple[str, int | str]:
        if uuid in self.migs:
            return ("mig", uuid)
        if uuid not in self.uuids:
            raise self.NVMLError("Not Found")
        return ("gpu", self.uuids.index(uuid))

    def nvmlDeviceGetUUID(self, handle: tuple[str, int | str]) -> str:
        return str(handle[1]) if handle[0] == "mig" else self.uuids[int(handle[1])]

    def nvmlDeviceIsMigDeviceHandle(self, handle: tuple[str, int | str]) -> int:
        return int(handle[0] == "mig")

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, handle: tuple[str, int | str]) -> tuple[str, int]:
        if handle[0] != "mig":
            raise self.NVMLError("Invalid Argument")
        return ("gpu", self.migs[str(handle[1])])

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: tuple[str, int | str]) -> int:
        index = self._readable(handle)
        if not self.energy_supported:
            raise self.NVMLError("Not Supported")
        return self.energy_mj[index]

    def nvmlDeviceGetPowerUsage(self, handle: tuple[str, int | str]) -> int:
        return self.power_mw[self._readable(handle)]

    def _readable(self, handle: tuple[str, int | str]) -> int:
        if handle[0] == "mig":
            raise self.NVMLError("Not Supported")
        if self.failing_reads:
            self.failing_reads -= 1
            raise self.NVMLError("GPU is lost")
        return int(handle[1])


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


Spawn = Callable[[str], "subprocess.Popen[bytes]"]


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Start a python child in its own process group; every group is killed and reaped afterwards."""
    started: list[subprocess.Popen[bytes]] = []

    def start(code: str = BURN) -> subprocess.Popen[bytes]:
        started.append(subprocess.Popen([sys.executable, "-c", code], start_new_session=True))
        return started[-1]

    yield start
    for proc in started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def group_members(proc: subprocess.Popen[bytes]) -> list[psutil.Process]:
    leader = psutil.Process(proc.pid)
    return [leader, *leader.children(recursive=True)]


def freeze(*procs: subprocess.Popen[bytes]) -> None:
    """SIGSTOP each process group and wait until every member is stopped: its CPU time no longer moves."""
    for proc in procs:
        os.killpg(proc.pid, signal.SIGSTOP)
    deadline = time.monotonic() + 10
    while any(p.status() != psutil.STATUS_STOPPED for proc in procs for p in group_members(proc)):
        assert time.monotonic() < deadline, "children did not stop"
        time.sleep(0.005)


def group_cpu_seconds(proc: subprocess.Popen[bytes]) -> float:
    return float(sum(p.cpu_times().user + p.cpu_times().system for p in group_members(proc)))


def burn(cpu_seconds: float, *procs: subprocess.Popen[bytes]) -> None:
    """Let the groups run until each has burned ``cpu_seconds`` more (however loaded the machine), then freeze."""
    targets = [group_cpu_seconds(proc) + cpu_seconds for proc in procs]
    for proc in procs:
        os.killpg(proc.pid, signal.SIGCONT)
    deadline = time.monotonic() + 30
    while any(group_cpu_seconds(proc) < target for proc, target in zip(procs, targets, strict=True)):
        assert time.monotonic() < deadline, "children did not get the CPU"
        time.sleep(0.02)
    freeze(*procs)


def wait_for_group(proc: subprocess.Popen[bytes], size: int) -> None:
    deadline = time.monotonic() + 10
    while len(group_members(proc)) < size:
        assert time.monotonic() < deadline, "grandchild did not start"
        time.sleep(0.01)


def cpu_meter(tmp_path: Path, client_pid: int) -> WindowMeter:
    return WindowMeter(client_pid=client_pid, powercap_root=tmp_path / "powercap", proc_root=tmp_path / "proc")


# ---- RAPL zones and counters ---------------------------------------------------------------------------------------
def test_zones_are_packages_and_their_dram_while_psys_core_and_the_control_folder_are_skipped(tmp_path: Path) -> None:
    FakePowercap(tmp_path, packages=2)
    zones, reason = find_rapl_zones(tmp_path)
    assert reason is None
    assert [(z.path.name, z.name, z.package, z.max_range_uj) for z in zones] == [
        ("intel-rapl:0", "package-0", "package-0", MAX_UJ),
        ("intel-rapl:1", "package-1", "package-1", MAX_UJ),
        ("intel-rapl:0:1", "dram", "package-0", MAX_UJ),
        ("intel-rapl:1:1", "dram", "package-1", MAX_UJ),
    ]


@pytest.mark.parametrize(
    ("before", "after", "delta"),
    [(10, 25, 15), (MAX_UJ - 4, MAX_UJ, 4), (MAX_UJ - 4, 0, 5), (MAX_UJ - 4, 10, 15), (7, 7, 0)],
)
def test_counter_delta_counts_through_one_wrap_modulo_max_range_plus_one(before: int, after: int, delta: int) -> None:
    assert counter_delta(before, after, MAX_UJ) == delta


def test_a_package_counter_wrapping_between_samples_is_counted_through_the_wrap(tmp_path: Path) -> None:
    powercap = FakePowercap(tmp_path / "powercap", packages=1)
    FakeStat(tmp_path / "proc")
    powercap.set("intel-rapl:0", MAX_UJ - 1_000_000)
    meter = cpu_meter(tmp_path, os.getpid())
    meter.start()
    powercap.add("intel-rapl:0", 0.5)
    meter.sample()
    powercap.add("intel-rapl:0", 2.0)
    assert int((tmp_path / "powercap" / "intel-rapl:0" / "energy_uj").read_text()) < 2_000_000
    cpu = meter.stop()["cpu"]
    assert cpu.machine_joules == pytest.approx(2.5, abs=1e-5)
    assert cpu.reads == 3


def test_machine_busy_time_sums_busy_fields_and_leaves_idle_iowait_and_guest_out(tmp_path: Path) -> None:
    (tmp_path / "stat").write_text("cpu  100 20 30 1000 500 4 5 1 50 7\ncpu0 100 20 30 1000 500 4 5 1 50 7\n")
    assert machine_busy_seconds(tmp_path) == pytest.approx(160 / HZ)


# ---- the client's CPU time -----------------------------------------------------------------------------------------
def test_process_tree_time_counts_living_descendants_and_reaped_children(spawn: Spawn) -> None:
    middle = spawn(SPAWN_A_BURNING_CHILD)
    wait_for_group(middle, 2)
    burn(0.3, middle)
    grandchild = group_members(middle)[1].cpu_times()
    tree = process_tree_seconds(middle.pid)
    assert tree >= grandchild.user + grandchild.system >= 0.3

    before = process_tree_seconds(os.getpid())
    subprocess.run([sys.executable, "-c", "import time\nwhile time.process_time() < 0.3: pass"], check=True)
    assert process_tree_seconds(os.getpid()) - before >= 0.25


def test_excluded_pids_are_left_out_with_their_descendants(spawn: Spawn) -> None:
    sidecar = spawn(SPAWN_A_BURNING_CHILD)
    wait_for_group(sidecar, 2)
    burn(0.3, sidecar)
    with_sidecar = process_tree_seconds(os.getpid())
    without = process_tree_seconds(os.getpid(), exclude={sidecar.pid})
    burned = sum(sum(p.cpu_times()[:2]) for p in group_members(sidecar))
    assert with_sidecar - without == pytest.approx(burned, abs=0.05)
    assert burned >= 0.3


# ---- apportioning ---------------------------------------------------------------------------------------------------
def test_job_energy_is_each_package_interval_times_the_jobs_cpu_share(tmp_path: Path, spawn: Spawn) -> None:
    powercap, stat = FakePowercap(tmp_path / "powercap"), FakeStat(tmp_path / "proc")
    job = spawn(BURN)
    freeze(job)
    before = process_tree_seconds(job.pid)
    meter = cpu_meter(tmp_path, job.pid)
    meter.start()
    burn(0.3, job)
    used = process_tree_seconds(job.pid) - before
    stat.advance(math.ceil(used * HZ * 4))
    powercap.add_all(package=30.0, dram=5.0)
    measured = meter.stop()

    share = used / (math.ceil(used * HZ * 4) / HZ)
    assert 0.2 < share <= 0.25
    cpu, ram = measured["cpu"], measured["ram"]
    assert (cpu.source, cpu.scope, ram.source, ram.scope) == ("counter", "apportioned", "counter", "apportioned")
    assert cpu.machine_joules == pytest.approx(60.0)
    assert cpu.joules == pytest.approx(60.0 * share) and cpu.share == pytest.approx(share)
    assert ram.machine_joules == pytest.approx(10.0) and ram.joules == pytest.approx(10.0 * share)
    assert "package-0, package-1" in cpu.method and "psys" not in cpu.method
    assert cpu.to_dict()["share"] == cpu.share and set(meter.unavailable) == {"gpu"}


def test_each_interval_is_split_by_its_own_share_not_the_windows_average(tmp_path: Path, spawn: Spawn) -> None:
    powercap, stat = FakePowercap(tmp_path / "powercap", packages=1), FakeStat(tmp_path / "proc")
    job = spawn(BURN)
    freeze(job)
    meter = cpu_meter(tmp_path, job.pid)
    meter.start()
    stat.advance(100 * HZ)
    powercap.add_all(package=100.0)  # other jobs ran; ours was stopped
    meter.sample()
    before = process_tree_seconds(job.pid)
    burn(0.3, job)
    used = process_tree_seconds(job.pid) - before
    stat.advance(math.ceil(used * HZ * 2))
    powercap.add_all(package=10.0)
    cpu = meter.stop()["cpu"]
    assert cpu.machine_joules == pytest.approx(110.0)
    assert cpu.joules == pytest.approx(10.0 * used * HZ / math.ceil(used * HZ * 2))
    assert cpu.reads == 3


def test_two_jobs_side_by_side_add_up_to_no_more_than_the_machine(tmp_path: Path, spawn: Spawn) -> None:
    powercap, stat = FakePowercap(tmp_path / "powercap"), FakeStat(tmp_path / "proc")
    first, second = spawn(BURN), spawn(BURN)
    freeze(first, second)
    before = process_tree_seconds(first.pid) + process_tree_seconds(second.pid)
    meters = [cpu_meter(tmp_path, job.pid) for job in (first, second)]
    for meter in meters:
        meter.start()
    burn(0.3, first, second)
    stat.advance(math.ceil((process_tree_seconds(first.pid) + process_tree_seconds(second.pid) - before) * HZ))
    powercap.add_all(package=50.0)
    cpu = [meter.stop()["cpu"] for meter in meters]
    assert cpu[0].machine_joules == cpu[1].machine_joules == pytest.approx(100.0)
    assert all(c.share is not None and 0 < c.share < 1 for c in cpu)
    assert all(c.joules == pytest.approx(100.0 * (c.share or 0)) for c in cpu)
    assert cpu[0].joules + cpu[1].joules <= 100.0 + 1e-9


# ---- what cannot be read -------------------------------------------------------------------------------------------
def test_no_powercap_folder_leaves_cpu_and_ram_out_with_the_reason(tmp_path: Path) -> None:
    FakeStat(tmp_path / "proc")
    meter = cpu_meter(tmp_path, os.getpid())
    meter.start()
    assert meter.stop() == {}
    assert meter.unavailable["cpu"].startswith("no RAPL: no powercap folder")
    assert set(meter.unavailable) == {"cpu", "ram", "gpu"}


def test_no_dram_zone_leaves_ram_out_and_cpu_measured(tmp_path: Path) -> None:
    FakePowercap(tmp_path / "powercap", dram=False)
    FakeStat(tmp_path / "proc")
    meter = cpu_meter(tmp_path, os.getpid())
    meter.start()
    assert set(meter.stop()) == {"cpu"}
    assert "dram" in meter.unavailable["ram"]


UNPRIVILEGED_WINDOW = """
import json, os, sys
from pathlib import Path
from explaunch.measure.counters import WindowMeter
meter = WindowMeter(client_pid=os.getpid(), powercap_root=Path(sys.argv[1]))
meter.start()
print(json.dumps({"measured": sorted(meter.stop()), "unavailable": meter.unavailable}))
"""


def test_energy_uj_readable_by_root_only_leaves_cpu_out_with_the_reason(tmp_path: Path) -> None:
    """As on Linux >= 5.10 for a non-root user. Root reads any file, so as root the window runs without the
    capabilities that let it (setpriv), which is what a non-root reader of a root-only file meets."""
    FakePowercap(tmp_path)
    for energy in tmp_path.glob("*/energy_uj"):
        energy.chmod(0)
    prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
    if prefix and (shutil.which("setpriv") is None or subprocess.run([*prefix, "true"], check=False).returncode):
        pytest.skip("running as root and cannot drop the capability to read any file")
    run = subprocess.run(
        [*prefix, sys.executable, "-c", UNPRIVILEGED_WINDOW, str(tmp_path)], capture_output=True, text=True, check=True
    )
    window = json.loads(run.stdout)
    assert window["measured"] == []
    assert "energy_uj is not readable (root-only" in window["unavailable"]["cpu"]


def test_a_counter_file_vanishing_mid_window_skips_that_read_without_raising(tmp_path: Path) -> None:
    powercap = FakePowercap(tmp_path / "powercap", packages=1)
    FakeStat(tmp_path / "proc")
    meter = cpu_meter(tmp_path, os.getpid())
    meter.start()
    powercap.add_all(package=3.0)
    energy = tmp_path / "powercap" / "intel-rapl:0" / "energy_uj"
    kept = energy.read_text()
    energy.unlink()
    meter.sample()
    energy.write_text(kept)
    powercap.add_all(package=4.0)
    cpu = meter.stop()["cpu"]
    assert cpu.machine_joules == pytest.approx(7.0) and cpu.reads == 2


def test_a_client_gone_before_the_window_leaves_cpu_out_with_the_reason(tmp_path: Path, spawn: Spawn) -> None:
    FakePowercap(tmp_path / "powercap")
    FakeStat(tmp_path / "proc")
    gone = spawn("pass")
    gone.wait()
    meter = cpu_meter(tmp_path, gone.pid)
    meter.start()
    meter.sample()
    assert meter.stop() == {}
    assert f"client process {gone.pid} not readable" in meter.unavailable["cpu"]


def test_a_client_exiting_mid_window_keeps_its_time_and_the_window_closes(tmp_path: Path, spawn: Spawn) -> None:
    powercap, stat = FakePowercap(tmp_path / "powercap", packages=1), FakeStat(tmp_path / "proc")
    job = spawn(BURN)
    freeze(job)
    meter = cpu_meter(tmp_path, job.pid)
    meter.start()
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    stat.advance(HZ)
    powercap.add_all(package=9.0)
    cpu = meter.stop()["cpu"]
    assert cpu.machine_joules == pytest.approx(9.0)
    assert (cpu.joules, cpu.reads) == (0.0, 2)


def test_sampling_from_a_thread_while_stopping_never_raises(tmp_path: Path) -> None:
    powercap = FakePowercap(tmp_path / "powercap", packages=1)
    FakeStat(tmp_path / "proc")
    meter = cpu_meter(tmp_path, os.getpid())
    meter.start()
    done, sampled = threading.Event(), threading.Event()

    def sample_until_done() -> None:
        while not done.is_set():
            meter.sample()
            sampled.set()

    sampler = threading.Thread(target=sample_until_done)
    sampler.start()
    assert sampled.wait(10)
    powercap.add_all(package=1.0)
    reads = meter.stop()["cpu"].reads
    time.sleep(0.02)
    done.set()
    sampler.join()
    meter.sample()
    assert reads >= 3 and meter.stop()["cpu"].reads == reads


# ---- GPUs ----------------------------------------------------------------------------------------------------------
def gpu_meter(tmp_path: Path, nvml: FakeNvml, uuids: list[str], clock: FakeClock | None = None) -> WindowMeter:
    return WindowMeter(
        client_pid=os.getpid(),
        powercap_root=tmp_path / "no-powercap",
        nvml=nvml,
        gpu_uuids=uuids,
        clock=clock or time.monotonic,
    )


def test_gpu_energy_is_the_counter_difference_on_the_jobs_devices_only(tmp_path: Path) -> None:
    nvml = FakeNvml()
    meter = gpu_meter(tmp_path, nvml, [nvml.uuids[1]])
    meter.start()
    nvml.energy_mj[0] += 999_000
    nvml.energy_mj[1] += 1_000
    meter.sample()
    nvml.energy_mj[1] += 1_500
    gpu = meter.stop()["gpu"]
    assert (gpu.source, gpu.scope, gpu.reads, gpu.note) == ("counter", "devices", 3, "")
    assert gpu.joules == pytest.approx(2.5) and gpu.devices == pytest.approx({nvml.uuids[1]: 2.5})


def test_gpu_without_an_energy_counter_integrates_power_over_the_clock(tmp_path: Path) -> None:
    nvml, clock = FakeNvml(energy_supported=False), FakeClock()
    meter = gpu_meter(tmp_path, nvml, [nvml.uuids[0]], clock)
    meter.start()
    clock.now += 1.0
    nvml.power_mw[0] = 200_000
    meter.sample()
    clock.now += 2.0
    gpu = meter.stop()["gpu"]
    assert (gpu.source, gpu.scope, gpu.reads) == ("sampled", "devices", 3)
    assert gpu.joules == pytest.approx(100 * 1.0 / 2 + 200 * 1.0 / 2 + 200 * 2.0)
    assert meter.window_s == pytest.approx(3.0)


def test_an_nvml_error_mid_window_is_noted_and_the_window_goes_on(tmp_path: Path) -> None:
    nvml, clock = FakeNvml(energy_supported=False), FakeClock()
    meter = gpu_meter(tmp_path, nvml, [nvml.uuids[0]], clock)
    meter.start()
    clock.now += 1.0
    nvml.failing_reads = 1
    meter.sample()
    clock.now += 1.0
    gpu = meter.stop()["gpu"]
    assert gpu.joules == pytest.approx(200.0) and gpu.reads == 2
    assert "1 NVML read error" in gpu.note and "GPU is lost" in gpu.note


def test_a_mig_partition_reads_its_parent_gpu_and_says_the_figure_is_the_whole_gpu(tmp_path: Path) -> None:
    nvml = FakeNvml(migs={"MIG-aaaa": 1, "MIG-bbbb": 1})
    meter = gpu_meter(tmp_path, nvml, ["MIG-aaaa", "MIG-bbbb", nvml.uuids[1]])
    meter.start()
    nvml.energy_mj[1] += 4_000
    gpu = meter.stop()["gpu"]
    assert (gpu.scope, gpu.source) == ("machine", "counter")
    assert gpu.joules == pytest.approx(4.0) and gpu.devices == pytest.approx({nvml.uuids[1]: 4.0})
    assert "MIG-aaaa" in gpu.note and "whole parent GPU" in gpu.note


def test_the_same_device_given_twice_is_counted_once(tmp_path: Path) -> None:
    nvml = FakeNvml()
    meter = gpu_meter(tmp_path, nvml, [nvml.uuids[0], nvml.uuids[0]])
    meter.start()
    nvml.energy_mj[0] += 1_000
    assert meter.stop()["gpu"].joules == pytest.approx(1.0)


def test_a_gpu_nvml_does_not_know_leaves_gpu_out_with_the_reason(tmp_path: Path) -> None:
    meter = gpu_meter(tmp_path, FakeNvml(), ["GPU-not-here"])
    meter.start()
    assert meter.stop() == {}
    assert "Not Found" in meter.unavailable["gpu"]


def test_without_an_nvml_object_the_library_is_tried_and_its_absence_explained(tmp_path: Path) -> None:
    meter = WindowMeter(client_pid=os.getpid(), powercap_root=tmp_path, gpu_uuids=["GPU-not-a-real-device"])
    meter.start()
    assert "gpu" not in meter.stop()
    assert "NVML" in meter.unavailable["gpu"]


@pytest.mark.parametrize(
    ("visible", "gpu_ids", "expected"),
    [
        (None, [], [0, 1, 2]),
        ("2,0", [], [2, 0]),
        ("2,0", [1], [0]),
        ("GPU-1bcd-fake,GPU-0bcd", [], [1, 0]),
        ("1,7,2", [], [1]),
        ("", [], []),
        ("0,0,1", [], [0, 1]),
    ],
)
def test_select_gpus_follows_cuda_visible_devices(visible: str | None, gpu_ids: list[int], expected: list[int]) -> None:
    nvml = FakeNvml(gpus=3)
    assert select_gpus(nvml, visible, gpu_ids) == [nvml.uuids[i] for i in expected]


def test_select_gpus_passes_a_mig_uuid_through() -> None:
    assert select_gpus(FakeNvml(), "MIG-aaaa", [0]) == ["MIG-aaaa"]


def test_select_gpus_names_the_invisible_id_and_the_visible_count() -> None:
    with pytest.raises(ValueError, match=r"GPU id 2 is not visible.*'1,0'.* 2 device"):
        select_gpus(FakeNvml(gpus=4), "1,0", [0, 2])
