"""Accuracy–fairness trade-off: a classifier trained with a fairness penalty weighted by ``lam``.

The data are generated, seeded, with a documented bias (see :func:`make_data`): a majority group (a=0, ``n_high``
samples) and an under-represented one (a=1, ``n_low``), whose features are shifted (so that they give the group away
even though ``a`` is not an input) and whose labels are biased: a member of group 1 needs a higher score to be
labelled positive (``label_bias``). A plain classifier learns the bias; the penalty (the gap in predicted positive
rates between groups, or in true/false positive rates) pulls it towards equal treatment, at a cost in accuracy
measured on labels drawn the same way.
"""

from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from explaunch.config import ExplaunchConfig
from explaunch.experiments.base import ExperimentResult
from explaunch.measure.energy import EnergyTracker


@dataclass(frozen=True)
class Data:
    x: torch.Tensor  # (n, features)
    y: torch.Tensor  # (n,) 0/1
    a: torch.Tensor  # (n,) sensitive attribute 0/1


def make_data(
    *, w: torch.Tensor, n_high: int, n_low: int, group_shift: float, label_bias: float, generator: torch.Generator
) -> Data:
    """Group 0: x ~ N(0, I); group 1: x ~ N(group_shift * e_0, I). A hidden score s = w.x + N(0, 0.5) (w: a unit
    vector drawn once per seed); label y = s > 0 in group 0 and y = s > label_bias in group 1 (fewer positives)."""
    features = w.numel()
    a = torch.cat([torch.zeros(n_high), torch.ones(n_low)])
    x = torch.randn(n_high + n_low, features, generator=generator)
    x[:, 0] += group_shift * a
    score = x @ w + 0.5 * torch.randn(n_high + n_low, generator=generator)
    y = (score > label_bias * a).float()
    order = torch.randperm(n_high + n_low, generator=generator)
    return Data(x[order], y[order], a[order])


def fairness_penalty(prob: torch.Tensor, y: torch.Tensor, a: torch.Tensor, kind: str) -> torch.Tensor:
    """Differentiable gap between the groups: in mean predicted probability (demographic parity), or the larger of
    the gaps among positives and among negatives (equalized odds)."""

    def gap(mask: torch.Tensor) -> torch.Tensor:
        g0, g1 = mask & (a == 0), mask & (a == 1)
        if not g0.any() or not g1.any():
            return prob.new_zeros(())
        return (prob[g0].mean() - prob[g1].mean()).pow(2)

    everyone = torch.ones_like(a, dtype=torch.bool)
    if kind == "demographic_parity":
        return gap(everyone)
    return torch.maximum(gap(y == 1), gap(y == 0))


def rate(values: torch.Tensor) -> float:
    return float(values.float().mean()) if values.numel() else float("nan")


def fairness_metrics(pred: torch.Tensor, y: torch.Tensor, a: torch.Tensor) -> dict[str, float]:
    out: dict[str, float] = {"accuracy": rate(pred == y)}
    tpr, fnr_free = [], []
    for group in (0, 1):
        in_group = a == group
        out[f"accuracy_group{group}"] = rate(pred[in_group] == y[in_group])
        out[f"positive_rate_group{group}"] = rate(pred[in_group] == 1)
        tpr.append(rate(pred[in_group & (y == 1)] == 1))
        fnr_free.append(rate(pred[in_group & (y == 0)] == 1))  # false positive rate
    out["tpr_group0"], out["tpr_group1"] = tpr
    out["fpr_group0"], out["fpr_group1"] = fnr_free
    out["balanced_accuracy"] = (rate(pred[y == 1] == 1) + rate(pred[y == 0] == 0)) / 2
    out["demographic_parity_difference"] = abs(out["positive_rate_group0"] - out["positive_rate_group1"])
    out["equalized_odds_difference"] = max(abs(tpr[0] - tpr[1]), abs(fnr_free[0] - fnr_free[1]))
    return out


def run(config: ExplaunchConfig, job_dir: Path) -> ExperimentResult:
    spec = config.experiment_type
    generator = torch.Generator().manual_seed(config.seed)
    w = torch.randn(spec.features, generator=generator)
    shape = dict(w=w / w.norm(), group_shift=spec.group_shift, label_bias=spec.label_bias, generator=generator)
    train = make_data(n_high=spec.n_high, n_low=spec.n_low, **shape)
    n_test_low = max(1, round(spec.n_test * spec.n_low / (spec.n_high + spec.n_low)))  # same group mix as training
    test = make_data(n_high=spec.n_test - n_test_low, n_low=n_test_low, **shape)
    inputs = (lambda d: torch.cat([d.x, d.a[:, None]], dim=1)) if spec.group_aware else (lambda d: d.x)
    model = torch.nn.Linear(spec.features + int(spec.group_aware), 1)
    initial = copy.deepcopy(model.state_dict())

    def train_once() -> float:
        """One training run from the same initial weights: every repeat of the energy window is the same work."""
        model.load_state_dict(initial)
        optimizer = torch.optim.Adam(model.parameters(), lr=spec.lr)
        loss_fn = torch.nn.BCEWithLogitsLoss()
        for _ in range(spec.epochs):
            optimizer.zero_grad()
            logits = model(inputs(train)).squeeze(1)
            prob = torch.sigmoid(logits)
            loss = loss_fn(logits, train.y) + config.lam * fairness_penalty(prob, train.y, train.a, spec.penalty)
            loss.backward()
            optimizer.step()
        return float(loss.item())

    # One unmeasured run first: torch's first backward and optimizer step set themselves up (about 1 s here), which
    # no run after pays. With energy on, the training then repeats (from the same weights, so to the same model)
    # until the window lasted energy.min_window_s and energy.min_iterations runs: one run of a fraction of a second
    # is no energy figure.
    train_once()
    energy = EnergyTracker.from_config(config.energy, None) if config.energy.enabled else None
    run_times: list[float] = []
    with energy if energy is not None else contextlib.nullcontext():
        window_start = time.perf_counter()
        while True:
            start = time.perf_counter()
            final_loss = train_once()
            run_times.append(time.perf_counter() - start)
            if energy is None or (
                time.perf_counter() - window_start >= config.energy.min_window_s
                and len(run_times) >= config.energy.min_iterations
            ):
                break

    with torch.no_grad():
        pred = (model(inputs(test)).squeeze(1) > 0).float()
    metrics = fairness_metrics(pred, test.y, test.a)
    metrics.update(
        train_time_s=sum(run_times) / len(run_times),
        final_loss=final_loss,
        n_train=float(spec.n_high + spec.n_low),
        window_training_runs=float(len(run_times)),
    )
    info: dict[str, object] = {
        "penalty": spec.penalty,
        "data": "generated (explaunch.experiments.fairness_tradeoff.make_data)",
        "train_positive_rate_group0": rate(train.y[train.a == 0]),
        "train_positive_rate_group1": rate(train.y[train.a == 1]),
    }
    if energy is not None and energy.reading is not None:
        metrics.update(energy.reading.metrics("energy"))
        metrics["energy_per_training_run_joules"] = energy.reading.energy_joules / len(run_times)
        info["energy"] = energy.reading.to_dict() | {"region": "training runs", "iterations": len(run_times)}
    elif energy is not None:
        info["energy"] = {"error": energy.error}
    return ExperimentResult(metrics=metrics, info=info)
