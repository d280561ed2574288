"""explaunch._compat holds every use of another library's private parts. These tests fail loudly when the installed
release no longer has what it relies on: then the fallback is what users get, and _compat needs a look."""

from __future__ import annotations

import os
from typing import Any

import psutil

from explaunch import _compat
from explaunch.measure.energy import combine


def test_the_installed_codecarbon_is_one_whose_private_meters_were_read() -> None:
    assert _compat.codecarbon_retargetable(), (
        f"codecarbon {_compat.codecarbon_release()} is not among {_compat.CODECARBON_READ}: the sidecar falls back to "
        "machine mode; read its meters' source and update explaunch/_compat.py"
    )


def test_a_real_tracker_s_meters_have_every_attribute_we_set_and_follow_another_process() -> None:
    from codecarbon import OfflineEmissionsTracker

    tracker = OfflineEmissionsTracker(
        country_iso_code="USA", tracking_mode="process", log_level="error", output_methods=[], allow_multiple_runs=True
    )
    meters = _compat.codecarbon_meters(tracker)
    assert meters is not None
    kinds = {type(m).__name__ for m in meters}
    assert {"CPU", "RAM"} <= kinds
    parent = psutil.Process(os.getppid())
    assert _compat.retarget_meters(meters, parent.pid, parent, list)
    cpu = next(m for m in meters if type(m).__name__ == "CPU")
    assert cpu._pid == parent.pid and cpu._process is parent
    assert _compat.codecarbon_cpu_mode(tracker) not in ("unknown", "absent")


def test_a_meter_without_what_it_is_known_by_is_left_alone() -> None:
    class CPU:  # a later codecarbon's meter, renamed inside
        pid = 1

    class RAM:
        _pid = 1
        _get_children_memories = None

    meters: list[Any] = [CPU(), RAM()]
    assert not _compat.retarget_meters(meters, 42, object(), list)
    assert meters[1]._pid == 1  # nothing was touched
    assert _compat.codecarbon_cpu_mode(object()) == "unknown"


def test_machine_mode_figures_say_they_cover_the_machine() -> None:
    figures = {
        "version": "9.9.9", "cpu_mode": "constant", "scope": "machine", "country": "USA", "interval_s": 1.0,
        "duration_s": 10.0, "energy_kwh": 2e-5, "cpu_kwh": 1e-5, "ram_kwh": 1e-5, "emissions_kg": 1e-6,
    }  # fmt: skip
    reading = combine(10.0, {}, {}, figures).to_dict()
    components = reading["components"]
    assert components["cpu"]["scope"] == "machine" and "machine mode" in components["cpu"]["method"]
    assert components["ram"]["scope"] == "machine"
