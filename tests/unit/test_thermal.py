"""GPU temperatures at job starts (hydra.sweeper.temperature_warn_c), read through a fake NVML."""

from __future__ import annotations

from typing import Any

from explaunch.launch.thermal import gpu_temperatures, temperature_warning


class FakeNvml:
    NVML_TEMPERATURE_GPU = 0

    def __init__(self, temperatures: list[float | None], fail_init: bool = False) -> None:
        self.temperatures = temperatures
        self.fail_init = fail_init
        self.shut_down = False

    def nvmlInit(self) -> None:
        if self.fail_init:
            raise RuntimeError("NVML Shared Library Not Found")

    def nvmlShutdown(self) -> None:
        self.shut_down = True

    def nvmlDeviceGetCount(self) -> int:
        return len(self.temperatures)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> Any:
        assert sensor == self.NVML_TEMPERATURE_GPU
        value = self.temperatures[handle]
        if value is None:
            raise RuntimeError("Not Supported")
        return int(value)


def test_every_gpu_that_can_be_read() -> None:
    nvml = FakeNvml([65, None, 71])
    assert gpu_temperatures(nvml) == {0: 65.0, 2: 71.0}
    assert nvml.shut_down


def test_none_without_nvml_or_gpus() -> None:
    assert gpu_temperatures(FakeNvml([], fail_init=True)) is None
    assert gpu_temperatures(FakeNvml([])) is None
    assert gpu_temperatures(FakeNvml([None])) is None


def test_the_real_nvml_never_raises() -> None:
    temperatures = gpu_temperatures()
    assert temperatures is None or all(0 < t < 130 for t in temperatures.values())


def test_a_warning_names_each_gpu_past_the_delta() -> None:
    first = {0: 60.0, 1: 70.0, 2: 50.0}
    now = {0: 72.0, 1: 73.0, 2: 44.0}
    assert temperature_warning(first, now, 5.0) == (
        "GPU 0 at 72 C, 12 C warmer than at the first job (60 C); GPU 2 at 44 C, 6 C cooler than at the first job "
        "(50 C) (its timings and energy may not compare with the first job's)"
    )


def test_no_warning_within_the_delta_or_for_gpus_not_read_both_times() -> None:
    assert temperature_warning({0: 60.0}, {0: 64.9}, 5.0) is None
    assert temperature_warning({0: 60.0}, {0: 65.0}, 5.0) is not None  # "this many degrees away" includes it
    assert temperature_warning({0: 60.0}, {1: 90.0}, 5.0) is None
    assert temperature_warning({0: 60.0}, {}, 5.0) is None
    assert temperature_warning({0: 60.0}, {0: 60.0}, 0.0) is None  # no change is never a warning
    assert temperature_warning({0: 60.0}, {0: 61.0}, 0.0) is not None
