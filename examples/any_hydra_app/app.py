"""A plain Hydra app that knows nothing of explaunch: its config alone (conf/config.yaml) adds explaunch's sweeper
(retries, resume) and its recording callbacks (job.json, MLflow, energy, resources).

    python examples/any_hydra_app/app.py -m lr=0.05,0.2 seed=0,1
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig


def dataset(n: int, rng: random.Random) -> list[tuple[float, float, int]]:
    """Two noisy clusters in the plane, labelled 0 and 1."""
    points = []
    for _ in range(n):
        label = rng.randint(0, 1)
        centre = 1.0 if label else -1.0
        points.append((rng.gauss(centre, 1.0), rng.gauss(centre, 1.0), label))
    return points


def fail_while_flaky(attempts: int) -> None:
    """``flaky_attempts=N``: the first N attempts of each job fail as a network error might (explaunch's sweeper
    retries an OSError); the count is kept in the job's folder, which a retry runs in again."""
    counter = Path(HydraConfig.get().runtime.output_dir) / "attempts_seen"
    seen = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(seen))
    if seen <= attempts:
        raise ConnectionError(f"flaky: attempt {seen} of {attempts} that fail")


@hydra.main(config_path="conf", config_name="config", version_base=None)
def train(cfg: DictConfig) -> dict[str, object]:
    """Logistic regression by gradient descent; what it returns (numbers, nested mappings) becomes the job's metrics."""
    fail_while_flaky(cfg.flaky_attempts)
    rng = random.Random(cfg.seed)
    data = dataset(cfg.samples, rng)
    w1 = w2 = b = 0.0
    loss = 0.0
    for _ in range(cfg.epochs):
        g1 = g2 = gb = loss = 0.0
        for x1, x2, y in data:
            p = 1.0 / (1.0 + math.exp(-(w1 * x1 + w2 * x2 + b)))
            loss -= math.log(p if y else 1.0 - p) / len(data)
            g1, g2, gb = g1 + (p - y) * x1, g2 + (p - y) * x2, gb + (p - y)
        w1, w2, b = w1 - cfg.lr * g1 / len(data), w2 - cfg.lr * g2 / len(data), b - cfg.lr * gb / len(data)
    accuracy = sum((w1 * x1 + w2 * x2 + b > 0) == bool(y) for x1, x2, y in data) / len(data)
    return {"loss": loss, "accuracy": accuracy, "weights": {"norm": math.hypot(w1, w2), "bias": b}}


if __name__ == "__main__":
    train()
