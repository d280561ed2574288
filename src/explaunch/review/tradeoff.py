"""Trade-offs between two metrics of a sweep: ``explaunch report SWEEP --tradeoff X Y`` and the dashboard's trade-off
view, both fed by ``tradeoff()``.

A point is one configuration: the swept values other than seeds (``review.config_params``), over its completed jobs
that recorded both metrics; its coordinates are the means, its error bars the sample standard deviations (over the
seeds). The Pareto front is the set of points that no other point beats on one metric without losing on the other,
which needs to know, for each metric, whether higher or lower is better: ``BETTER`` knows the metrics explaunch's
experiments record; any other is stated by the user (``--better x=max,y=min``) or refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from explaunch.errors import ConfigError
from explaunch.review import rows as review

DIRECTIONS = ("max", "min")


class UnknownDirection(ConfigError):
    """Neither ``BETTER`` nor the user says whether higher or lower is better for a metric on one axis."""

    def __init__(self, axis: str, metric: str, option: str) -> None:
        self.axis, self.metric = axis, metric
        allowed = f"no known direction for this metric; say which is better with {option} {axis}=max or {axis}=min"
        super().__init__("--tradeoff", metric, allowed)


# (part of the metric's name, which is better); the first that the lowercased name contains wins.
BETTER: tuple[tuple[str, str], ...] = (
    ("parity_difference", "min"),  # demographic_parity_difference
    ("odds_difference", "min"),  # equalized_odds_difference
    ("disparity", "min"),
    ("gap", "min"),  # dp_gap, accuracy_gap: a disparity, so before accuracy
    ("per_joule", "max"),  # tokens_per_joule, flops_per_joule
    ("throughput", "max"),
    ("tokens_per_s", "max"),
    ("accuracy", "max"),  # accuracy, balanced_accuracy, accuracy_group0
    ("map50", "max"),  # ultralytics: metrics/mAP50(B), metrics/mAP50-95(B)
    ("precision", "max"),
    ("recall", "max"),
    ("latency", "min"),
    ("ttft", "min"),
    ("energy", "min"),  # energy_joules, energy_per_output_token_j, job_energy_joules
    ("joules", "min"),
    ("emissions", "min"),
    ("memory", "min"),
    ("loss", "min"),
    ("duration_s", "min"),
    ("time_s", "min"),
)
# The pair the dashboard shows first, where the sweep has it.
DEFAULT_PAIRS = (
    ("throughput_e2e_tokens_per_s", "energy_per_output_token_j"),
    ("accuracy", "demographic_parity_difference"),
    ("metrics/mAP50-95(B)", "job_energy_joules"),
)


def known_direction(metric: str) -> str | None:
    """``max`` (higher is better), ``min``, or None for a metric ``BETTER`` does not know."""
    name = metric.lower()
    return next((better for part, better in BETTER if part in name), None)


def default_pair(metrics: Sequence[str]) -> tuple[str, str] | None:
    """The two metrics to show first: a known pair the sweep has, else the first two whose direction is known,
    else the first two; None below two metrics."""
    for x, y in DEFAULT_PAIRS:
        if x in metrics and y in metrics:
            return x, y
    known = [m for m in metrics if known_direction(m) is not None]
    chosen = known[:2] if len(known) >= 2 else list(metrics[:2])
    return (chosen[0], chosen[1]) if len(chosen) == 2 else None


def parse_better(text: str | None, x: str, y: str, option: str = "--better") -> dict[str, str]:
    """``x=max,y=min`` (or the metrics' names for x and y) as ``{"x": "max", "y": "min"}``; keys left out are not
    in the answer."""
    out: dict[str, str] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        key, sep, value = (s.strip() for s in part.partition("="))
        axis = "x" if key in ("x", x) else "y" if key in ("y", y) else None
        if not sep or axis is None or value not in DIRECTIONS:
            raise ConfigError(option, text, f"expected x=max|min,y=max|min (or {x}=..., {y}=...)")
        out[axis] = value
    return out


def directions(x: str, y: str, better: Mapping[str, str], option: str = "--better") -> dict[str, str]:
    """Which is better for each axis: as given, else as known; an unknown one is an error naming ``option``."""
    out = {}
    for axis, metric in (("x", x), ("y", y)):
        chosen = better.get(axis) or known_direction(metric)
        if chosen is None:
            raise UnknownDirection(axis, metric, option)
        out[axis] = chosen
    return out


def pareto_front(points: Sequence[tuple[float, float]], better_x: str, better_y: str) -> list[int]:
    """Indexes (ascending) of the points no other point dominates: at least as good on both metrics and better on
    one. Equal points are all on the front."""
    sx = 1.0 if better_x == "max" else -1.0
    sy = 1.0 if better_y == "max" else -1.0
    scored = [(sx * x, sy * y) for x, y in points]
    front = []
    for i, (xi, yi) in enumerate(scored):
        dominated = any(xj >= xi and yj >= yi and (xj > xi or yj > yi) for xj, yj in scored)
        if not dominated:
            front.append(i)
    return front


def tradeoff(
    rows: Sequence[dict[str, Any]],
    x: str,
    y: str,
    better: Mapping[str, str] | None = None,
    option: str = "--better",
) -> dict[str, Any]:
    """The points (one per configuration of completed jobs with both metrics), which is better on each axis, and
    the front. ``rows`` are ``review.load_rows``'s, already filtered as the user asked. Raises ``ConfigError`` for
    a metric the sweep's completed jobs lack or a direction neither known nor given (``option`` names where the
    user gives it)."""
    done = review.completed(rows)
    if not done:
        raise ConfigError("--tradeoff", f"{x} {y}", "no completed job to place (only completed jobs count)")
    for metric in (x, y):
        review.check_metric("--tradeoff", metric, done)
    if x == y:
        raise ConfigError("--tradeoff", f"{x} {y}", "needs two different metrics (X Y)")
    chosen = directions(x, y, better or {}, option)
    params = review.config_params(done)
    both = [r for r in done if review.as_number(r.get(x)) is not None and review.as_number(r.get(y)) is not None]
    if not both:
        raise ConfigError("--tradeoff", f"{x} {y}", "no completed job has both metrics: nothing to place")
    points = []
    for group in review.group_rows(both, params, [x, y]):
        config = {p: group[p] for p in params}
        points.append(
            {
                "config": config,
                "label": " ".join(f"{k}={v}" for k, v in config.items()) or "all jobs",
                "n": group["n"],
                "x_mean": group[f"{x}_mean"],
                "x_std": group[f"{x}_std"],
                "y_mean": group[f"{y}_mean"],
                "y_std": group[f"{y}_std"],
            }
        )
    front = pareto_front([(p["x_mean"], p["y_mean"]) for p in points], chosen["x"], chosen["y"])
    for i, point in enumerate(points):
        point["on_front"] = i in front
    return {
        "x": x,
        "y": y,
        "better": chosen,
        "params": params,
        "points": points,
        "front": [points[i]["label"] for i in sorted(front, key=lambda i: points[i]["x_mean"])],
        "jobs": len(both),
        "left_out": len(rows) - len(both),  # not completed, or without one of the metrics
    }


def axis_label(metric: str, better: str) -> str:
    return f"{metric} ({'higher' if better == 'max' else 'lower'} is better)"


def plot_tradeoff(result: dict[str, Any], out: Path) -> Path:
    """A PNG of ``tradeoff()``'s points: error bars in both directions (std over seeds), each point labelled with its
    configuration, the front drawn as a line through its points and ringed, the better corner said on each axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, y, better = result["x"], result["y"], result["better"]
    points = result["points"]
    fig, ax = plt.subplots(figsize=(7.5, 5), dpi=100)
    try:
        for on_front, color, name in ((False, "#9aa3b2", "dominated"), (True, "#d64541", "Pareto front")):
            chosen = [p for p in points if p["on_front"] is on_front]
            if not chosen:
                continue
            ax.errorbar(
                [p["x_mean"] for p in chosen],
                [p["y_mean"] for p in chosen],
                xerr=[p["x_std"] or 0.0 for p in chosen],
                yerr=[p["y_std"] or 0.0 for p in chosen],
                fmt="o",
                color=color,
                ecolor=color,
                capsize=3,
                label=f"{name} ({len(chosen)})",
            )
        front = sorted((p for p in points if p["on_front"]), key=lambda p: p["x_mean"])
        if len(front) > 1:
            ax.plot([p["x_mean"] for p in front], [p["y_mean"] for p in front], color="#d64541", alpha=0.5, lw=1)
        for p in points:
            ax.annotate(p["label"], (p["x_mean"], p["y_mean"]), textcoords="offset points", xytext=(5, 5), fontsize=8)
        ax.set_xlabel(axis_label(x, better["x"]))
        ax.set_ylabel(axis_label(y, better["y"]))
        counts = sorted({p["n"] for p in points})
        spread = "one job per point" if counts == [1] else "mean ± std over seeds"
        ax.set_title(f"{y} vs {x}: {len(points)} configurations, {spread}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, format="png")
    finally:
        plt.close(fig)
    return out
