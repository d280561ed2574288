from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from explaunch.measure.energy import JOULES_PER_KWH, EnergyTracker


def busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    x = 0
    while time.perf_counter() < end:
        x += 1


def test_every_component_of_a_busy_region_says_its_source_and_scope() -> None:
    """Here (no RAPL, no GPU) the CPU and RAM figures are codecarbon's models, labelled so; a window of a second is
    low quality, and says why."""
    with EnergyTracker(measure_power_secs=0.5) as tracker:
        busy(1.0)
    reading = tracker.reading
    assert reading is not None, tracker.error
    assert reading.window_s == pytest.approx(1.0, abs=0.5)
    assert reading.energy_joules > 0
    assert reading.energy_joules == pytest.approx(sum(c["joules"] for c in reading.components.values()))
    assert reading.energy_kwh == pytest.approx(reading.energy_joules / JOULES_PER_KWH)
    assert {"cpu", "ram"} <= set(reading.components)
    for component in reading.components.values():
        assert component["source"] in {"counter", "sampled", "modelled"}
        assert component["scope"] in {"devices", "process", "machine", "apportioned"}
    if "cpu" in reading.unavailable:  # no RAPL here: the model, labelled as one
        assert reading.components["cpu"]["source"] == "modelled"
        assert reading.components["cpu"]["scope"] == "process"
    if "ram" in reading.unavailable:  # this process's few hundred MB get codecarbon's floor: the machine's constant
        assert (reading.components["ram"]["source"], reading.components["ram"]["scope"]) == ("modelled", "machine")
        assert "per-machine constant model" in reading.components["ram"]["note"]
    assert reading.quality == "low" and any("window" in r for r in reading.quality_reasons)
    metrics = reading.metrics("energy")
    assert metrics["energy_joules"] == pytest.approx(reading.energy_joules)
    assert {"energy_kwh", "energy_cpu_joules", "energy_gpu_joules", "energy_ram_joules"} <= set(metrics)
    assert metrics["energy_window_s"] == reading.window_s


def test_quality_is_low_for_short_windows_and_few_samples_only() -> None:
    from explaunch.measure.energy import combine, window_quality

    counted = {"gpu": {"joules": 50.0, "source": "counter", "scope": "devices", "reads": 3}}
    assert window_quality(12.0, counted) == []  # a counter read at both edges needs no samples in between
    sampled = {"gpu": {"joules": 50.0, "source": "sampled", "scope": "devices", "reads": 4}}
    assert window_quality(12.0, sampled) == ["gpu: 4 sampled samples < 10"]
    assert window_quality(2.0, counted) == ["window 2.00 s < 5 s"]
    figures = {
        "version": "3.3.2",
        "cpu_mode": "cpu_load",
        "country": "FRA",
        "interval_s": 0.5,
        "duration_s": 12.0,
        "energy_kwh": 2e-5,
        "cpu_kwh": 1e-5,
        "ram_kwh": 1e-5,
        "emissions_kg": 1e-6,
    }
    reading = combine(12.0, counted, {"cpu": "no RAPL"}, figures)
    assert reading.components["gpu"]["source"] == "counter"  # the counter wins; codecarbon fills cpu and ram
    assert reading.components["cpu"]["source"] == "modelled" and reading.components["ram"]["samples"] == 25
    assert reading.energy_joules == pytest.approx(50.0 + 36.0 + 36.0)
    assert reading.emissions_kg == pytest.approx(0.05 * reading.energy_kwh)  # codecarbon's intensity x our energy
    assert reading.quality == "ok" and reading.unavailable == {"cpu": "no RAPL"}


def test_codecarbon_s_ram_floor_is_labelled_machine_and_only_a_figure_above_it_process() -> None:
    """codecarbon's RAM model gives a job of a few hundred MB the same ~10 W as one of 16 GB: that floor is a
    constant of the machine's model, so it must not claim to be the process's own energy."""
    from explaunch.measure.energy import combine

    def ram(ram_w: float, scope: str = "process") -> dict[str, Any]:
        figures = {
            "version": "3.3.2",
            "cpu_mode": "cpu_load",
            "scope": scope,
            "country": "FRA",
            "interval_s": 0.5,
            "duration_s": 12.0,
            "energy_kwh": 2e-5,
            "cpu_kwh": 1e-5,
            "ram_kwh": ram_w * 12.0 / JOULES_PER_KWH,
            "ram_w": ram_w,
            "ram_floor_w": 10.0,
            "emissions_kg": 1e-6,
        }
        reading = combine(12.0, {}, {}, figures)
        assert reading.components["cpu"]["scope"] == scope  # the CPU model follows the job's CPU time
        return reading.components["ram"]

    floor = ram(10.0)
    assert (floor["source"], floor["scope"]) == ("modelled", "machine") and floor["joules"] == pytest.approx(120.0)
    assert "per-machine constant model" in floor["note"] and "10 W" in floor["note"]
    above = ram(20.0)  # a job of 17-32 GB: 4 DIMMs' worth, from its own memory
    assert above["scope"] == "process" and "note" not in above
    whole = ram(10.0, scope="machine")  # codecarbon's machine mode: the machine's memory, already machine
    assert whole["scope"] == "machine" and "note" not in whole


def test_the_ram_floor_is_codecarbon_s_own() -> None:
    """Our copy of codecarbon's floor, held against its model (x86 and ARM) for a job of 100 MB and of 16 GB."""
    from codecarbon.external.ram import RAM

    from explaunch.measure.energy import CODECARBON_RAM_FLOOR_W

    model = RAM(tracking_mode="process")
    for arch, floor_w in CODECARBON_RAM_FLOOR_W.items():
        model.is_arm_cpu = arch == "arm"
        assert model._calculate_ram_power(0.1) == model._calculate_ram_power(16.0) == floor_w
        assert model._calculate_ram_power(64.0) > floor_w


def test_a_gpu_window_synchronizes_with_the_device_right_before_each_edge() -> None:
    """``synchronize`` stands in for ``torch.cuda.synchronize`` (no GPU here) and, like it, returns once the work
    queued on the device is done, here after ``drain_s``. Work queued before the window must drain before its first
    edge (outside it), work queued inside before its last edge (inside it): the window lasts one drain, not none
    (the stop's synchronize skipped or late) and not two (the start's inside the window)."""
    drain_s = 1.0
    synchronized: list[str] = []

    def synchronize() -> None:
        time.sleep(drain_s)
        synchronized.append("done")

    with EnergyTracker(measure_power_secs=0.5, synchronize=synchronize) as tracker:
        assert synchronized == ["done"]  # at the start edge, before the body runs
    assert synchronized == ["done", "done"]  # and at the stop edge
    assert tracker.reading is not None, tracker.error
    assert drain_s <= tracker.reading.window_s < 2 * drain_s


def test_the_sidecar_measures_this_process_not_itself(tmp_path: Path) -> None:
    """codecarbon runs in the sidecar but its CPU meter follows this process: busy here means CPU power here."""
    with EnergyTracker(measure_power_secs=0.5) as idle:
        time.sleep(1.5)
    with EnergyTracker(measure_power_secs=0.5, csv_path=tmp_path / "emissions.csv") as working:
        busy(1.5)
    assert idle.reading is not None and working.reading is not None, (idle.error, working.error)
    if working.reading.components["cpu"]["scope"] == "process":  # from the process's CPU time: clear-cut
        assert working.reading.joules("cpu") > 3 * idle.reading.joules("cpu"), (working.reading, idle.reading)
    assert (tmp_path / "emissions.csv").read_text().count("\n") >= 2  # codecarbon's own CSV, header + a row


def test_the_sidecar_counts_the_work_of_this_process_s_children() -> None:
    """A job that runs its work in a child process (a legacy script) is measured with it; the sidecar, a child too,
    is left out (it would otherwise read its own sampling as the job's)."""
    loop = "import time\nend = time.perf_counter() + 1.5\nwhile time.perf_counter() < end: pass"
    with EnergyTracker(measure_power_secs=0.5) as idle:
        subprocess.run([sys.executable, "-c", "import time; time.sleep(1.5)"], check=True)
    with EnergyTracker(measure_power_secs=0.5) as working:
        subprocess.run([sys.executable, "-c", loop], check=True)
    assert idle.reading is not None and working.reading is not None, (idle.error, working.error)
    assert working.reading.joules("cpu") > 3 * idle.reading.joules("cpu"), (working.reading, idle.reading)


def test_the_sidecar_s_cpu_model_is_py_cpuinfo_s() -> None:
    """The sidecar reads the CPU model from /proc/cpuinfo instead of py-cpuinfo's ~1 s probe: the same string here
    (codecarbon looks its TDP up by it), and nothing where Linux lists no model name."""
    import cpuinfo

    from explaunch.measure.sidecar import proc_cpu_model

    listed = proc_cpu_model(Path("/proc/cpuinfo").read_text()) if Path("/proc/cpuinfo").exists() else None
    if listed is None:
        pytest.skip("no model name in /proc/cpuinfo: the sidecar runs py-cpuinfo")
    assert listed == cpuinfo.get_cpu_info()["brand_raw"]
    arm = "processor\t: 0\nBogoMIPS\t: 50.00\nCPU implementer\t: 0x41\n"
    assert proc_cpu_model(arm) is None
    assert proc_cpu_model("processor\t: 0\nmodel name\t: AMD EPYC 7B13\n") == "AMD EPYC 7B13"


def test_a_job_tracker_and_a_region_tracker_run_at_once() -> None:
    with EnergyTracker(measure_power_secs=0.5) as job:
        with EnergyTracker(measure_power_secs=0.5) as region:
            busy(0.5)
        busy(0.5)
    assert job.reading is not None and region.reading is not None
    assert job.reading.window_s > region.reading.window_s


def test_trackers_in_two_threads_run_at_once() -> None:
    from explaunch.measure import meter

    readings: dict[str, EnergyTracker] = {}

    def track(name: str, seconds: float) -> None:
        with EnergyTracker(measure_power_secs=0.5) as tracker:
            time.sleep(seconds)
        readings[name] = tracker

    threads = [threading.Thread(target=track, args=(name, s)) for name, s in (("short", 0.6), ("long", 1.2))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert {n: t.error for n, t in readings.items()} == {"short": None, "long": None}
    assert readings["long"].reading is not None and readings["short"].reading is not None
    assert readings["long"].reading.window_s > readings["short"].reading.window_s
    assert meter.sidecar_pid() is not None


def test_a_start_that_fails_in_the_sidecar_is_reported_when_its_tracker_stops() -> None:
    """After the first, a start is not awaited: its failure comes back from stop(), and the replies of the requests
    after it stay in order."""
    from explaunch.measure import meter

    with EnergyTracker():  # a sidecar past its hardware probe
        pass
    bad = meter.start({"country": "USA", "interval": "not a number"}, wait=False)
    with EnergyTracker(measure_power_secs=0.5) as good:
        time.sleep(0.2)
    assert good.reading is not None, good.error
    with pytest.raises(meter.MeterError, match="did not start: ValueError"):
        meter.stop(bad)


def test_a_killed_meter_is_an_error_not_a_hang() -> None:
    from explaunch.measure import meter

    with EnergyTracker() as tracker:
        pid = meter.sidecar_pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
    assert tracker.reading is None and tracker.error is not None and "energy meter" in tracker.error
    with EnergyTracker() as after:  # the next tracker starts a new sidecar
        pass
    assert after.reading is not None, after.error
    assert meter.sidecar_pid() not in (None, pid)


def test_a_meter_that_stops_answering_is_ended_after_its_time_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    from explaunch.measure import meter

    with EnergyTracker():  # a sidecar past its hardware probe
        pass
    monkeypatch.setattr(meter, "REPLY_TIMEOUT_S", 1.0)
    with EnergyTracker() as tracker:
        pid = meter.sidecar_pid()
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        start = time.perf_counter()
    assert time.perf_counter() - start < 10
    assert tracker.reading is None and tracker.error is not None and "did not answer in 1 s" in tracker.error
    assert not psutil.pid_exists(pid)  # ended and reaped: a late reply cannot be taken for the next request's


def test_a_forked_child_measures_itself_with_its_own_sidecar() -> None:
    from explaunch.measure import meter

    with EnergyTracker():
        pass
    parent_sidecar = meter.sidecar_pid()
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover (runs in the child)
        try:
            with EnergyTracker(measure_power_secs=0.5) as tracker:
                busy(0.5)
            report = {"sidecar": meter.sidecar_pid(), "error": tracker.error, "ok": tracker.reading is not None}
            os.write(write_end, json.dumps(report).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        report = json.loads(pipe.read() or "{}")
    os.waitpid(child, 0)
    assert report.get("ok"), report
    assert report["sidecar"] not in (None, parent_sidecar)
    assert meter.sidecar_pid() == parent_sidecar  # the parent's own sidecar is untouched


CLIENT = """
import sys, time
from explaunch.measure.energy import EnergyTracker
from explaunch.measure import meter
with EnergyTracker():
    print(meter.sidecar_pid(), flush=True)
    if sys.argv[1] == "kill":
        time.sleep(60)
"""


@pytest.mark.parametrize("end", ["exit", "kill"])
def test_the_sidecar_ends_with_its_process(end: str) -> None:
    """A worker that exits, or is killed while a tracker runs, leaves no sidecar behind."""
    with subprocess.Popen([sys.executable, "-c", CLIENT, end], stdout=subprocess.PIPE, text=True) as client:
        try:
            assert client.stdout is not None
            sidecar = int(client.stdout.readline())
            assert psutil.Process(sidecar).ppid() == client.pid
            if end == "kill":
                client.kill()
            assert client.wait(timeout=60) == (-signal.SIGKILL if end == "kill" else 0)
        finally:
            client.kill()
    for _ in range(100):
        if not psutil.pid_exists(sidecar) or psutil.Process(sidecar).status() == psutil.STATUS_ZOMBIE:
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"sidecar {sidecar} outlived its process")
