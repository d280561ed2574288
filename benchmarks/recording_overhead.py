"""Per-job cost of explaunch's recording: the same sweep with all recording on, with ``tracking=none``, and with
no recording callback at all, interleaved in one run (absolute times on shared machines drift; ratios taken side by
side do not). Basic launcher, so that the jobs run one after another in one process and only recording differs.

    .venv/bin/python -m benchmarks.recording_overhead [--jobs 8] [--repeats 3] [--out benchmarks/results/...json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
JOB = ("batching.num_prompts=8", "batching.max_new_tokens=4", "batching.warmup_batches=1", "hydra/launcher=basic")
VARIANTS = {
    "all_recording": (),
    "tracking_none": ("tracking=none",),
    "no_callbacks": ("tracking=none", "~hydra.callbacks.recording", "hydra/sweeper=basic"),  # no records to read
}


def run_sweep(extra: tuple[str, ...], jobs: int, workdir: Path) -> float:
    sweep_dir = Path(tempfile.mkdtemp(dir=workdir))
    cmd = [sys.executable, str(ROOT / "main.py"), "-m", f"seed=range(0,{jobs})", *JOB, *extra]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    start = time.perf_counter()
    subprocess.run([*cmd, f"hydra.sweep.dir={sweep_dir}"], cwd=sweep_dir, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "recording_overhead.json")
    args = parser.parse_args()
    timings: dict[str, list[float]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            for name, extra in VARIANTS.items():  # interleaved: drift hits every variant alike
                timings[name].append(run_sweep(extra, args.jobs, Path(tmp)))
    median = {name: statistics.median(values) for name, values in timings.items()}
    base = median["no_callbacks"]
    result = {
        "benchmark": "recording_overhead",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "versions": {p: version(p) for p in ("hydra-core", "mlflow", "codecarbon", "torch", "transformers")},
        "jobs": args.jobs,
        "repeats": args.repeats,
        "sweep_wall_s": timings,
        "median_wall_s": median,
        "overhead_per_job_s": {name: (m - base) / args.jobs for name, m in median.items()},
        "ratio_to_no_callbacks": {name: m / base for name, m in median.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for name in VARIANTS:
        print(
            f"{name:15s} median {median[name]:6.2f} s  per-job overhead {result['overhead_per_job_s'][name]:+.3f} s"
            f"  ratio {result['ratio_to_no_callbacks'][name]:.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
