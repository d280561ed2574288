"""How a job's energy is put together: ranks of a multi-process job, and the idle baseline."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from explaunch.measure import baseline
from explaunch.measure.energy import ComponentEnergy


def rank(gpu: dict[str, float], cpu_j: float, machine_j: float, ram_j: float = 10.0) -> dict[str, Any]:
    return {
        "window_s": 10.0,
        "components": {
            "gpu": ComponentEnergy(sum(gpu.values()), "counter", "devices", 12, devices=gpu).to_dict(),
            "cpu": ComponentEnergy(cpu_j, "counter", "apportioned", 50, machine_j, cpu_j / machine_j).to_dict(),
            "ram": {"joules": ram_j, "source": "modelled", "scope": "process", "samples": 21},
        },
        "quality_reasons": [],
    }


@pytest.mark.extras
def test_ranks_on_distinct_gpus_add_up_and_a_shared_gpu_counts_once() -> None:
    from explaunch.experiments.sharded import sum_rank_energy

    apart = sum_rank_energy([rank({"GPU-a": 100.0}, 5.0, 40.0), rank({"GPU-b": 120.0}, 6.0, 40.0)])
    assert apart["components"]["gpu"]["joules"] == 220.0
    assert apart["components"]["gpu"]["devices"] == {"GPU-a": 100.0, "GPU-b": 120.0}
    assert apart["components"]["cpu"]["joules"] == 11.0  # each rank's own share of the machine
    assert apart["components"]["cpu"]["share"] == pytest.approx(11.0 / 40.0)
    assert apart["components"]["ram"]["joules"] == 10.0  # a per-process constant: taken once
    shared = sum_rank_energy([rank({"GPU-a": 100.0}, 5.0, 40.0), rank({"GPU-a": 101.0}, 6.0, 40.0)])
    assert shared["components"]["gpu"]["joules"] == 101.0  # one device, read by both ranks: never twice
    assert shared["joules"] == pytest.approx(101.0 + 11.0 + 10.0)


@pytest.mark.extras
def test_a_multi_process_job_s_quality_is_that_of_the_generate_windows_its_figures_come_from() -> None:
    """Each rank's ``info.energy`` is low where its prefill window was; the job reports no prefill figure, so its
    quality is that of the ranks' generate windows."""
    from explaunch.experiments.sharded import sum_rank_energy

    def by_window(generate: list[str], prefill: list[str]) -> dict[str, Any]:
        windows = {"generate": generate, "prefill": prefill}
        return {
            "quality_reasons": [f"{name} window: {r}" for name, reasons in windows.items() for r in reasons],
            "quality_by_window": {
                name: {"quality": "low" if reasons else "ok", "quality_reasons": reasons}
                for name, reasons in windows.items()
            },
        }

    short = "window 2.00 s < 5 s"
    ok = sum_rank_energy([rank({"GPU-a": 1.0}, 5.0, 40.0) | by_window([], [short]) for _ in range(2)])
    assert (ok["quality"], ok["quality_reasons"]) == ("ok", [])
    low = sum_rank_energy([rank({"GPU-a": 1.0}, 5.0, 40.0) | by_window([short], [short]) for _ in range(2)])
    assert (low["quality"], low["quality_reasons"]) == ("low", [short])


def test_adjusted_energy_takes_the_idle_power_at_the_job_s_scope() -> None:
    idle = {"power_w": {"cpu": 20.0, "gpu": 60.0}, "devices_w": {"GPU-a": 60.0, "GPU-b": 55.0}}
    reading = rank({"GPU-a": 1000.0}, 100.0, 400.0) | {"window_s": 10.0}
    adjusted = baseline.adjust(reading, idle)
    assert adjusted is not None
    watts, joules, components = adjusted
    assert watts == pytest.approx(60.0 + 20.0 * 0.25)  # its GPU whole, the CPU at its share, RAM (a model) not
    assert joules == pytest.approx(1000.0 + 100.0 + 10.0 - watts * 10.0)
    assert sorted(components) == ["cpu", "gpu"]
    assert baseline.adjust({"window_s": 1.0, "components": {"ram": reading["components"]["ram"]}}, idle) is None


def test_one_job_per_host_measures_the_baseline_and_the_others_wait_for_it(tmp_path: Path) -> None:
    from tests.conftest import compose_config

    energy = compose_config("energy.measure_power_secs=0.1").energy
    results: list[dict[str, Any]] = []
    jobs = [threading.Thread(target=lambda: results.append(baseline.host_baseline(tmp_path, 0.5, energy)))]
    jobs.append(threading.Thread(target=lambda: results.append(baseline.host_baseline(tmp_path, 0.5, energy))))
    for job in jobs:
        job.start()
    for job in jobs:
        job.join(timeout=120)
    written = json.loads(baseline.baseline_file(tmp_path).read_text())
    assert results == [written, written]
    assert written["seconds"] >= 0.5 and "power_w" in written
    assert not list(tmp_path.glob("*.lock"))


def test_the_baseline_is_off_on_a_host_without_a_gpu_unless_asked() -> None:
    try:
        import pynvml

        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        pytest.skip("NVML works here: a GPU host")
    except Exception:
        pass
    assert baseline.resolve_seconds(None) == 0.0
    assert baseline.resolve_seconds(3.0) == 3.0
