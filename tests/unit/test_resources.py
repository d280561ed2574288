from __future__ import annotations

import csv
import time
from pathlib import Path

from explaunch.measure.resources import AlertThresholds, ResourceSampler


def rows(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_sampler_writes_a_time_series_and_summarises_it(tmp_path: Path) -> None:
    sampler = ResourceSampler(tmp_path / "resources.csv", interval_s=0.1).start()
    hog = bytearray(100 * 1024 * 1024)  # 100 MiB, touched so that it is resident
    for i in range(0, len(hog), 4096):
        hog[i] = 1
    time.sleep(0.5)
    summary = sampler.stop()
    series = rows(tmp_path / "resources.csv")
    assert len(series) == summary.samples >= 4
    assert {"elapsed_s", "cpu_percent", "rss_mib", "system_memory_percent", "disk_free_gb"} <= set(series[0])
    elapsed = [float(r["elapsed_s"]) for r in series]
    assert elapsed == sorted(elapsed)
    assert summary.peak["rss_mib"] >= 100
    assert summary.mean["rss_mib"] <= summary.peak["rss_mib"]
    assert summary.metrics()["resources_peak_rss_mib"] == summary.peak["rss_mib"]
    assert summary.sample_errors == 0
    del hog


def test_stop_returns_within_one_interval(tmp_path: Path) -> None:
    sampler = ResourceSampler(tmp_path / "r.csv", interval_s=2.0).start()
    time.sleep(0.1)
    t0 = time.perf_counter()
    sampler.stop()
    assert time.perf_counter() - t0 < 2.0


def test_crossed_thresholds_add_one_alert_per_metric(tmp_path: Path) -> None:
    limits = AlertThresholds(memory_percent=0.0, cpu_percent=None, gpu_memory_percent=None, disk_free_gb=1e9)
    sampler = ResourceSampler(tmp_path / "r.csv", interval_s=0.05, thresholds=limits).start()
    time.sleep(0.3)
    summary = sampler.stop()
    assert len(summary.alerts) == 2
    assert any(a.startswith("system_memory_percent") and "above the alert threshold 0" in a for a in summary.alerts)
    assert any(a.startswith("disk_free_gb") and "below the alert threshold" in a for a in summary.alerts)


def test_no_alert_below_thresholds(tmp_path: Path) -> None:
    limits = AlertThresholds(memory_percent=100.0, cpu_percent=1e6, gpu_memory_percent=100.0, disk_free_gb=0.0)
    sampler = ResourceSampler(tmp_path / "r.csv", interval_s=0.05, thresholds=limits).start()
    time.sleep(0.2)
    assert sampler.stop().alerts == []


class FlakySampler(ResourceSampler):
    calls = 0

    def sample(self) -> dict[str, float]:
        self.calls += 1
        if self.calls % 2:
            raise OSError("sensor gone")
        return super().sample()


def test_a_failing_sample_never_stops_the_loop(tmp_path: Path) -> None:
    sampler = FlakySampler(tmp_path / "r.csv", interval_s=0.05).start()
    time.sleep(0.4)
    summary = sampler.stop()
    assert summary.sample_errors >= 2
    assert summary.samples >= 2  # the loop went on after the errors
