"""One place that seeds every random number generator a job uses."""

from __future__ import annotations

import os
import random
import sys


def seed_everything(seed: int, *, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (CUDA included) and set torch's deterministic mode on or off.

    Called at the start of every job, after the experiment module was imported: torch is seeded when the experiment
    uses it (it is then imported), and a job that does not need torch does not pay for importing it. A reused worker
    process must not carry the previous job's RNG state or flags.
    """
    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch = sys.modules.get("torch")
    if torch is None:
        return
    torch.manual_seed(seed)  # also seeds every CUDA device
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = False
