"""The dashboard's line per sweep control (controls.json, written by explaunch.launch.controls)."""

from __future__ import annotations

from explaunch.review.dashboard.state import controls_lines


def test_each_control_the_sweep_has_is_one_line_and_none_is_no_line() -> None:
    data = {
        "limits": {"memory_percent": 90.0, "poll_s": 1.0, "held_s": 12.5, "holds": 2, "holding": "memory 93% > 90%"},
        "budget": {"energy_kwh": {"budget": 0.002, "spent": 0.00125, "per_job": 0.0004, "projected": 0.0021}},
        "stop_when": {"rule": "accuracy >= 0.9", "met": None},
        "order": {"order": "shuffle", "seed": 7},
    }
    assert controls_lines(data) == [
        "limits memory_percent 90: held 12.5 s (2x), holding now: memory 93% > 90%",
        "budget energy_kwh: 0.00125 of 0.002 spent",
        "stop_when accuracy >= 0.9: not met yet",
        "order shuffle (seed 7)",
    ]
    assert controls_lines(None) == [] and controls_lines({}) == []
