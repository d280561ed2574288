"""Wall time of a 16-job sweep on the local SLURM cluster: explaunch (hydra/launcher=submitit_slurm, all recording
on) against a plain ``sbatch --array=0-15 --wait`` of a script doing the same work (sleep, no recording), run side by
side in one run. Needs the cluster: ``make slurm-up`` first.

    .venv/bin/python -m benchmarks.slurm_vs_sbatch [--jobs 16] [--work-s 2] [--repeats 2]
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def explaunch_sweep(jobs: int, work_s: float, workdir: Path) -> float:
    sweep = Path(tempfile.mkdtemp(dir=workdir))
    cmd = [
        sys.executable, str(ROOT / "main.py"), "-m", "hydra/launcher=submitit_slurm", "experiment_type=probe",
        f"seed=range(0,{jobs})", f"experiment_type.duration_s={work_s}", f"hydra.sweep.dir={sweep}",
    ]  # fmt: skip
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    start = time.perf_counter()
    subprocess.run(cmd, cwd=sweep, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def plain_array(jobs: int, work_s: float, workdir: Path) -> float:
    folder = Path(tempfile.mkdtemp(dir=workdir))
    script = folder / "job.sh"
    script.write_text(
        "#!/bin/bash\n#SBATCH --cpus-per-task=1\n#SBATCH --mem=1G\n"
        f"#SBATCH --output={folder}/%A_%a.out\n"
        f'{sys.executable} -c "import time; time.sleep({work_s})"\n'
    )
    start = time.perf_counter()
    subprocess.run(["sbatch", f"--array=0-{jobs - 1}", "--wait", str(script)], check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--work-s", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "slurm_vs_sbatch.json")
    args = parser.parse_args()
    timings: dict[str, list[float]] = {"explaunch": [], "sbatch_array": []}
    with tempfile.TemporaryDirectory(dir=ROOT) as tmp:  # on the disk the jobs share with the parent
        for _ in range(args.repeats):
            timings["sbatch_array"].append(plain_array(args.jobs, args.work_s, Path(tmp)))
            timings["explaunch"].append(explaunch_sweep(args.jobs, args.work_s, Path(tmp)))
    median = {k: statistics.median(v) for k, v in timings.items()}
    result = {
        "benchmark": "slurm_vs_sbatch",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
        "jobs": args.jobs,
        "work_s": args.work_s,
        "wall_s": timings,
        "median_wall_s": median,
        "ratio_explaunch_to_sbatch": median["explaunch"] / median["sbatch_array"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{args.jobs} jobs of {args.work_s:g} s: sbatch --array {median['sbatch_array']:.1f} s, "
        f"explaunch {median['explaunch']:.1f} s, ratio {result['ratio_explaunch_to_sbatch']:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
