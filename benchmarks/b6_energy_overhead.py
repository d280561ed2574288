"""B6: how much codecarbon's sampling slows a CPU-bound job: the same fixed work timed inside
``explaunch.measure.energy.EnergyTracker`` (its default ``measure_power_secs``, process mode, as jobs use it) and
without it, alternated (ABBA) in one process, many times.

Two kinds of work, since the sampler costs them differently: a pure-Python loop (one thread; a sampler in the job's
process competes for its GIL, hence the sidecar process of ``explaunch.measure.meter``) and a torch matmul loop on
every core (the sampler, wherever it runs, competes for a core). The timed region is the work alone; the tracker's
start and stop (the first start in a process waits about 0.4 s for the meter's hardware probe) are recorded apart, as
they do not slow the work but lengthen the job.

    python -m benchmarks.b6_energy_overhead --worker --pairs 14 --work-s 2.5     # the measurement alone, prints JSON
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

from benchmarks.harness import BenchResult, Context, Row, Spread, Target, abba_ratios, run_json_worker

ID = "B6"
TITLE = "energy tracker sampling overhead on CPU-bound work"
TARGET = Target("<=", 2.0)
WORK_S = 2.5


def python_work(n: int) -> None:
    total = 0
    for i in range(n):
        total += i * i % 7
    if total < 0:
        raise AssertionError


def torch_work_factory() -> Callable[[int], None]:
    import torch

    a = torch.randn(384, 384)
    b = torch.randn(384, 384)

    def work(n: int) -> None:
        c = a
        for _ in range(n):
            c = torch.tanh(c @ b)

    return work


def calibrate(work: Callable[[int], None], seconds: float) -> int:
    """Units of work that take about ``seconds`` here: after a warm-up (torch starts its thread pool on first use),
    from the fastest of three timings of a size that takes 0.2 s or more."""
    work(1)
    n = 1
    while True:
        timings = []
        for _ in range(3):
            start = time.perf_counter()
            work(n)
            timings.append(time.perf_counter() - start)
        if min(timings) > 0.2:
            return max(1, int(n * seconds / min(timings)))
        n *= 4


def worker(pairs: int, work_s: float) -> dict[str, Any]:
    from explaunch.measure.energy import EnergyTracker

    out: dict[str, Any] = {"measure_power_secs": EnergyTracker().measure_power_secs}
    for name, work in (("python", python_work), ("torch", torch_work_factory())):
        n = calibrate(work, work_s)
        on, off, start_s, stop_s = [], [], [], []
        for i in range(pairs):
            for tracked in (True, False) if i % 2 == 0 else (False, True):
                if not tracked:
                    t0 = time.perf_counter()
                    work(n)
                    off.append(time.perf_counter() - t0)
                    continue
                tracker = EnergyTracker()
                t0 = time.perf_counter()
                tracker.__enter__()
                t1 = time.perf_counter()
                work(n)
                t2 = time.perf_counter()
                tracker.__exit__(None, None, None)
                t3 = time.perf_counter()
                if tracker.reading is None:
                    raise RuntimeError(f"the tracker recorded nothing: {tracker.error}")
                on.append(t2 - t1)
                start_s.append(t1 - t0)
                stop_s.append(t3 - t2)
        out[name] = {"units": n, "on": on, "off": off, "start_s": start_s, "stop_s": stop_s}
    return out


def run(ctx: Context) -> BenchResult:
    pairs = max(2, ctx.n(14))  # 7 ABBA blocks
    start = time.perf_counter()
    data = run_json_worker(
        "benchmarks.b6_energy_overhead", ["--worker", "--pairs", str(pairs), "--work-s", str(WORK_S)]
    )
    rows, stats, raw = [], {}, {}
    for name, label in (("python", "pure-Python loop"), ("torch", "torch matmul, all cores")):
        part = data[name]
        overheads = [100.0 * (r - 1.0) for r in abba_ratios(part["on"], part["off"])]
        spread = Spread.of(overheads)
        stats[f"{name}_overhead_percent"] = spread
        stats[f"{name}_on_s"] = Spread.of(part["on"])
        stats[f"{name}_off_s"] = Spread.of(part["off"])
        raw[name] = part
        best = 100.0 * (min(part["on"]) / min(part["off"]) - 1.0)  # timeit's rule: other load only adds time
        rows.append(
            Row(
                ID,
                f"energy tracker overhead, {label}",
                spread.median,
                "%",
                TARGET,
                spread.min,
                spread.max,
                detail=f"{stats[f'{name}_off_s'].median:.2f} s of work; best of each: {best:+.1f}%; tracker start "
                f"{Spread.of(part['start_s']).median:.2f} s (first {part['start_s'][0]:.2f} s) + stop "
                f"{Spread.of(part['stop_s']).median:.2f} s, not in the work",
            )
        )
    return BenchResult(
        ID,
        TITLE,
        rows,
        settings={"pairs": pairs, "work_s": WORK_S, "measure_power_secs": data["measure_power_secs"]},
        raw=raw,
        stats=stats,
        notes=[
            "overhead = median over ABBA blocks (pairs 2k, 2k+1 in opposite orders) of (work time with the tracker "
            "/ without) - 1; spread = their min .. max",
            "best of each = min(with) / min(without) - 1, shown beside: noise from other load only adds time",
        ],
        wall_s=time.perf_counter() - start,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", action="store_true", required=True)
    parser.add_argument("--pairs", type=int, default=14)
    parser.add_argument("--work-s", type=float, default=WORK_S)
    args = parser.parse_args()
    print(json.dumps(worker(args.pairs, args.work_s)))
