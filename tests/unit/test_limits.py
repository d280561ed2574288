"""hydra.sweeper.limits: new launches held while the machine is over a limit, with a fake machine and clock."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path

import pytest

from explaunch.launch.limits import LaunchGate, MachineReader


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class FakeMachine:
    """Each read returns the next of ``readings`` (the last one again once they run out)."""

    def __init__(self, *readings: Mapping[str, float | None]) -> None:
        self.readings = list(readings)
        self.asked: list[list[str]] = []

    def __call__(self, names: Collection[str]) -> Mapping[str, float | None]:
        self.asked.append(sorted(names))
        reading = self.readings.pop(0) if len(self.readings) > 1 else self.readings[0]
        return {name: reading.get(name) for name in names}


def gate(
    limits: Mapping[str, float], machine: FakeMachine, clock: FakeClock, said: list[str], tmp_path: Path
) -> LaunchGate:
    return LaunchGate(limits, tmp_path, said.append, clock=clock, read=machine, sleep=clock.sleep)


def never() -> bool:
    return False


def test_no_limits_set_samples_nothing(tmp_path: Path) -> None:
    machine, clock, said = FakeMachine({"memory_percent": 99.0}), FakeClock(), list[str]()
    launch_gate = gate({}, machine, clock, said, tmp_path)
    assert launch_gate.wait_until_clear(never) == 0.0
    unread = LaunchGate({"poll_s": 2.0}, tmp_path, said.append)
    assert unread.read is None  # no machine reader is even made
    assert unread.wait_until_clear(never) == 0.0
    assert machine.asked == [] and said == [] and clock.sleeps == []
    assert (launch_gate.held_s, launch_gate.holds) == (0.0, 0)


def test_under_every_limit_nothing_is_held_or_said(tmp_path: Path) -> None:
    machine, clock, said = FakeMachine({"memory_percent": 50.0, "disk_free_gb": 100.0}), FakeClock(), list[str]()
    launch_gate = gate({"memory_percent": 90, "disk_free_gb": 10, "poll_s": 1.0}, machine, clock, said, tmp_path)
    assert launch_gate.wait_until_clear(never) == 0.0
    assert machine.asked == [["disk_free_gb", "memory_percent"]]
    assert said == [] and clock.sleeps == []


def test_held_while_over_a_limit_said_once_each_way(tmp_path: Path) -> None:
    machine = FakeMachine(
        {"memory_percent": 93.14},
        {"memory_percent": 95.0},
        {"memory_percent": 91.0},
        {"memory_percent": 80.0},
    )
    clock, said = FakeClock(), list[str]()
    launch_gate = gate({"memory_percent": 90, "poll_s": 2.0}, machine, clock, said, tmp_path)
    assert launch_gate.wait_until_clear(never) == 6.0
    assert clock.sleeps == [2.0, 2.0, 2.0]
    assert said == ["holding new jobs: memory 93.1% > limit 90%", "resuming new jobs after 6 s held"]
    assert (launch_gate.held_s, launch_gate.holds, launch_gate.holding) == (6.0, 1, None)
    # a second hold adds up
    machine.readings = [{"memory_percent": 99.0}, {"memory_percent": 10.0}]
    assert launch_gate.wait_until_clear(never) == 2.0
    assert (launch_gate.held_s, launch_gate.holds) == (8.0, 2)


def test_every_limit_passed_is_named_and_disk_is_a_floor(tmp_path: Path) -> None:
    reading = {"memory_percent": 50.0, "cpu_percent": 97.0, "gpu_memory_percent": 95.5, "disk_free_gb": 3.24}
    clear = {**reading, "cpu_percent": 1.0, "gpu_memory_percent": 1.0, "disk_free_gb": 50.0}
    machine, clock, said = FakeMachine(reading, clear), FakeClock(), list[str]()
    limits = {"memory_percent": 90.0, "cpu_percent": 90.0, "gpu_memory_percent": 90.0, "disk_free_gb": 10.0}
    launch_gate = gate(limits, machine, clock, said, tmp_path)
    assert launch_gate.wait_until_clear(never) == 1.0  # poll_s defaults to 1
    assert said[0] == (
        "holding new jobs: cpu 97.0% > limit 90%; gpu memory 95.5% > limit 90%; disk free 3.2 GB < limit 10 GB"
    )


def test_a_limit_that_cannot_be_read_is_said_once_and_ignored(tmp_path: Path) -> None:
    machine, clock, said = FakeMachine({"memory_percent": 50.0, "gpu_memory_percent": None}), FakeClock(), list[str]()
    launch_gate = gate({"memory_percent": 90.0, "gpu_memory_percent": 80.0}, machine, clock, said, tmp_path)
    assert launch_gate.wait_until_clear(never) == 0.0
    assert launch_gate.wait_until_clear(never) == 0.0
    assert said == ["hydra.sweeper.limits.gpu_memory_percent ignored: it cannot be read (no NVIDIA GPU or NVML here)"]
    assert machine.asked == [["gpu_memory_percent", "memory_percent"], ["memory_percent"]]


def test_only_unreadable_limits_leave_nothing_to_sample(tmp_path: Path) -> None:
    machine, clock, said = FakeMachine({"gpu_memory_percent": None}), FakeClock(), list[str]()
    launch_gate = gate({"gpu_memory_percent": 80.0}, machine, clock, said, tmp_path)
    launch_gate.wait_until_clear(never)
    launch_gate.wait_until_clear(never)
    assert len(machine.asked) == 1 and len(said) == 1


def test_a_reader_that_raises_holds_nothing_and_is_said_once(tmp_path: Path) -> None:
    def broken(names: Collection[str]) -> Mapping[str, float | None]:
        raise OSError("no /proc")

    clock, said = FakeClock(), list[str]()
    launch_gate = LaunchGate({"memory_percent": 90.0}, tmp_path, said.append, clock=clock, read=broken)
    assert launch_gate.wait_until_clear(never) == 0.0
    assert launch_gate.wait_until_clear(never) == 0.0
    assert said == ["cannot read the machine for hydra.sweeper.limits (OSError: no /proc); not held"]


def test_a_stop_while_held_returns_at_once_without_resuming(tmp_path: Path) -> None:
    machine, clock, said = FakeMachine({"cpu_percent": 100.0}), FakeClock(), list[str]()
    launch_gate = gate({"cpu_percent": 90.0, "poll_s": 5.0}, machine, clock, said, tmp_path)
    calls = []

    def stop_on_third() -> bool:
        calls.append(1)
        return len(calls) >= 3

    assert launch_gate.wait_until_clear(stop_on_third) == 10.0
    assert said == ["holding new jobs: cpu 100.0% > limit 90%"]
    assert launch_gate.held_s == 10.0 and launch_gate.holding is None


def test_an_unknown_limit_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown limit swap_percent"):
        LaunchGate({"swap_percent": 50.0}, tmp_path, print)


def test_the_real_machine_reads_sane_values(tmp_path: Path) -> None:
    frozen = 5.0  # a clock that does not move: the second read comes "too soon" for a new CPU window
    reader = MachineReader(tmp_path / "not" / "made" / "yet", clock=lambda: frozen)
    try:
        values = reader(["memory_percent", "cpu_percent", "disk_free_gb", "gpu_memory_percent"])
        memory, cpu, disk = values["memory_percent"], values["cpu_percent"], values["disk_free_gb"]
        assert memory is not None and 0.0 < memory <= 100.0
        assert cpu is not None and 0.0 <= cpu <= 100.0
        assert disk is not None and disk > 0.0
        gpu = values["gpu_memory_percent"]
        assert gpu is None or 0.0 <= gpu <= 100.0
        assert reader(["cpu_percent"])["cpu_percent"] == cpu  # too soon for a new window: the last one's
    finally:
        reader.close()
