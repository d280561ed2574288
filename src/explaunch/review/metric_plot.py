"""A metric of a sweep against one of its swept parameters, as a PNG: ``explaunch report --plot METRIC --x PARAM``.
Each point is the mean of the jobs sharing that value (``explaunch.review.rows.group_rows``), its error bar their
sample std."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from explaunch.errors import ConfigError
from explaunch.review.rows import as_number, group_key, group_rows


def plot_metric(
    rows: Sequence[dict[str, Any]], metric: str, x: str, out: Path, hue: str | None = None
) -> dict[str, Any]:
    """A PNG of ``metric`` against the swept parameter ``x``: each point the mean of the jobs sharing that value
    (and ``hue``'s), error bars their sample std (over seeds and the parameters not shown). Returns what was drawn:
    ``{"series": [{"label", "points": [{"x", "mean", "std", "n"}]}]}``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with_metric = [r for r in rows if as_number(r.get(metric)) is not None and r.get(x) is not None]
    if not with_metric:
        raise ConfigError("--plot", metric, f"no job has both {metric} and {x}: nothing to draw")
    by = [hue, x] if hue else [x]
    groups = group_rows(with_metric, by, [metric])
    numeric = all(as_number(g[x]) is not None for g in groups)
    categories = sorted({g[x] for g in groups}, key=group_key)
    series: dict[str, list[dict[str, Any]]] = {}
    for g in groups:
        label = f"{hue}={g[hue]}" if hue else metric
        point = {"x": g[x], "mean": g[f"{metric}_mean"], "std": g[f"{metric}_std"], "n": g[f"{metric}_n"]}
        series.setdefault(label, []).append(point)

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    try:
        for label, points in series.items():
            points.sort(key=lambda p: group_key(p["x"]))
            xs = [float(as_number(p["x"]) or 0.0) if numeric else float(categories.index(p["x"])) for p in points]
            ax.errorbar(
                xs,
                [p["mean"] for p in points],
                yerr=[p["std"] or 0.0 for p in points],
                marker="o",
                capsize=4,
                label=label,
            )
        if not numeric:
            ax.set_xticks(range(len(categories)), [str(c) for c in categories])
        ax.set_xlabel(x)
        ax.set_ylabel(metric)
        counts = sorted({p["n"] for points in series.values() for p in points})
        if counts == [1]:
            ax.set_title(f"{metric} vs {x}: one job per point (no spread to show)", fontsize=10)
        else:
            n_text = str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
            ax.set_title(f"{metric} vs {x}: mean ± std over n={n_text} jobs per point", fontsize=10)
        ax.grid(alpha=0.3)
        if hue:
            ax.legend(title=None)
        fig.tight_layout()
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, format="png")
    finally:
        plt.close(fig)
    return {"metric": metric, "x": x, "hue": hue, "series": [{"label": k, "points": v} for k, v in series.items()]}
