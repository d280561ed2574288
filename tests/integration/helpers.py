from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import MAIN

# Small enough for CI on 2 cores, large enough that every batch size is really used (48 prompts / 32 = 2 batches);
# energy windows of a fraction of a second (one pass over the prompts): their energy is marked low quality.
TINY = (
    "batching.num_prompts=48",
    "batching.max_new_tokens=8",
    "batching.warmup_batches=1",
    "energy.min_window_s=0.3",
    "energy.min_iterations=1",
    "energy.prefill_window_s=0.1",
)


def run_main(
    *args: str, cwd: Path, timeout: float = 900, env: dict[str, str] | None = None, main: Path = MAIN
) -> subprocess.CompletedProcess[str]:
    """``python main.py ARGS`` as a user runs it, in ``cwd``; MLflow's default store is then ``cwd/mlflow.db``."""
    base = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env = {**base, "MLFLOW_DISABLE_TELEMETRY": "true", "HYDRA_FULL_ERROR": "0", **(env or {})}
    return subprocess.run(
        [sys.executable, str(main), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
