"""Two sweeps compared group by group: ``explaunch compare SWEEP_A SWEEP_B`` ("did my change make it faster,
greener, fairer?").

A group is one combination of values of the ``by`` parameters. By default those are the parameters swept (taking
more than one value) in either sweep and present in the overrides of both, seeds excluded (``review.is_seed``):
what differs between the two sweeps on purpose (a value set once per sweep, or the code) is what is compared, the
seeds are the repeats the statistics run over. Only completed jobs count. For each group found in both sweeps and
each metric: mean, sample std and n on each side, the difference B - A (and relative to A, in %), Welch's t-test
(two-sided; t is B's mean minus A's) and Hedges' g (B - A over the pooled sample std, small-sample corrected:
explaunch.review.significance).
A side with fewer than 2 values, or two sides without spread, get no test, said in the row.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from explaunch.errors import ConfigError
from explaunch.review import rows as review
from explaunch.review import significance

TEST = "welch (two-sided)"
EFFECT_SIZE = "hedges_g"
ROW_COLUMNS = (
    "group",
    "metric",
    "n_a",
    "mean_a",
    "std_a",
    "n_b",
    "mean_b",
    "std_b",
    "diff",
    "diff_pct",
    "t",
    "df",
    "p_value",
    "hedges_g",
    "note",
)


def default_by(rows_a: Sequence[dict[str, Any]], rows_b: Sequence[dict[str, Any]]) -> list[str]:
    """The parameters swept in either sweep that both sweeps' overrides hold, seeds excluded; in A's order."""
    in_b = set(review.param_names(rows_b))
    swept = {*review.varying_params(rows_a), *review.varying_params(rows_b)}
    return [p for p in review.param_names(rows_a) if p in in_b and p in swept and not review.is_seed(p)]


def check_by(by: Sequence[str], sides: Sequence[tuple[str, Sequence[dict[str, Any]]]]) -> list[str]:
    for param in by:
        for name, rows in sides:
            available = [*review.param_names(rows), *review.tag_names(rows)]
            if param not in available:
                raise ConfigError(
                    "--by", param, f"no such parameter in {name}; its parameters: {', '.join(available) or 'none'}"
                )
    return list(by)


def choose_metrics(
    option: str | None, sides: Sequence[tuple[str, Sequence[dict[str, Any]]]]
) -> tuple[list[str], list[str]]:
    """The metrics to compare (from ``--metrics M1,M2``, ``all``, or by default the headline ones of A that B has
    too) and the default ones left out because one sweep lacks them. ``sides``: each sweep's name and its completed
    rows. A named metric that either sweep lacks is an error naming that sweep."""
    (name_a, done_a), (name_b, done_b) = sides
    in_a, in_b = review.metric_names(done_a), review.metric_names(done_b)
    shared = [m for m in in_a if m in in_b]
    if option is None or option == "all":
        wanted = review.default_metrics(done_a) if option is None else shared
        chosen = [m for m in wanted if m in in_b]
        if not shared:
            raise ConfigError(
                "--metrics",
                option or "(default)",
                f"the completed jobs of the two sweeps share no metric; {name_a} has: {', '.join(in_a) or 'none'}; "
                f"{name_b} has: {', '.join(in_b) or 'none'}",
            )
        if not chosen:
            raise ConfigError(
                "--metrics",
                "(default)",
                f"none of the headline metrics of {name_a} ({', '.join(wanted)}) is in {name_b}; name those to "
                f"compare; in both: {', '.join(shared)}",
            )
        return chosen, [m for m in wanted if m not in in_b]
    chosen = []
    for metric in (m.strip() for m in option.split(",")):
        if not metric:
            continue
        missing = [name for name, names in ((name_a, in_a), (name_b, in_b)) if metric not in names]
        if missing:
            where = "either sweep" if len(missing) == 2 else missing[0]
            raise ConfigError("--metrics", metric, f"no such metric in {where}; in both: {', '.join(shared) or 'none'}")
        chosen.append(metric)
    if not chosen:
        raise ConfigError("--metrics", option, f"names no metric; in both: {', '.join(shared) or 'none'}")
    return chosen, []


def differences(
    rows_a: Sequence[dict[str, Any]], rows_b: Sequence[dict[str, Any]], by: Sequence[str]
) -> dict[str, dict[str, list[Any]]]:
    """The parameters, other than ``by`` and seeds, whose values differ between the two sweeps (a parameter one
    sweep lacks has the value None there): what the comparison is about, as far as the overrides say."""
    out = {}
    for param in dict.fromkeys([*review.param_names(rows_a), *review.param_names(rows_b)]):
        if param in by or review.is_seed(param):
            continue
        values_a = sorted({row.get(param) for row in rows_a}, key=review.group_key)
        values_b = sorted({row.get(param) for row in rows_b}, key=review.group_key)
        if values_a != values_b:
            out[param] = {"a": values_a, "b": values_b}
    return out


def group_members(rows: Sequence[dict[str, Any]], by: Sequence[str]) -> dict[tuple[Any, ...], list[dict[str, Any]]]:
    """Rows by their ``by`` values; numbers as numbers (``lam=0.1`` in one sweep meets ``lam=0.10`` in the other)."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in rows:
        key = tuple(review.group_key(row.get(p)) for p in by)
        groups.setdefault(key, []).append(row)
    return groups


def group_label(by: Sequence[str], row: dict[str, Any]) -> str:
    return " ".join(f"{p}={row.get(p)}" for p in by) or "all jobs"


def compare_values(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """Mean, std and n of each side, B - A (absolute, and in % of A's mean), Welch's t (B minus A), its degrees of
    freedom and two-sided p-value, Hedges' g of B against A; ``note`` says why a test is missing."""
    mean_a, std_a = review.mean_std(a)
    mean_b, std_b = review.mean_std(b)
    out: dict[str, Any] = {"n_a": len(a), "mean_a": mean_a, "std_a": std_a}
    out |= {"n_b": len(b), "mean_b": mean_b, "std_b": std_b}
    diff = mean_b - mean_a if mean_a is not None and mean_b is not None else None
    out["diff"] = diff
    out["diff_pct"] = 100.0 * diff / abs(mean_a) if diff is not None and mean_a else None
    out |= {"t": None, "df": None, "p_value": None, "hedges_g": None, "note": ""}
    few = [f"n={n} in {side}" for side, n in (("A", len(a)), ("B", len(b))) if n < 2]
    if few:
        out["note"] = f"no test: {' and '.join(few)} (needs 2 a side)"
        return out
    result = significance.welch(b, a)
    out["hedges_g"] = significance.hedges_g(b, a)
    if result.p_value is None:
        out["note"] = "no test: no spread on either side"
        return out
    out |= {"t": result.statistic, "df": result.df, "p_value": result.p_value}
    return out


def compare_sweeps(
    rows_a: Sequence[dict[str, Any]],
    rows_b: Sequence[dict[str, Any]],
    by: Sequence[str],
    metrics: Sequence[str],
    by_option: str | None = None,
) -> dict[str, Any]:
    """One row per group found in both sweeps and metric (see the module docstring), in the groups' sorted order.
    Raises ``ConfigError`` when no group is in both (``by_option``: the ``--by`` the user gave, None for the
    default)."""
    done_a, done_b = review.completed(rows_a), review.completed(rows_b)
    groups_a, groups_b = group_members(done_a, by), group_members(done_b, by)
    common = sorted(set(groups_a) & set(groups_b))
    if not common:

        def listed(groups: dict[tuple[Any, ...], list[dict[str, Any]]]) -> str:
            labels = [group_label(by, groups[k][0]) for k in sorted(groups)]
            return ", ".join(labels[:5]) + (f", ... ({len(labels)})" if len(labels) > 5 else "") or "none"

        why = "" if by_option is not None else " (default: the parameters swept in either sweep, seeds excluded)"
        raise ConfigError(
            "--by",
            by_option if by_option is not None else ",".join(by),
            f"no group is in both sweeps{why}; A has: {listed(groups_a)}; B has: {listed(groups_b)}",
        )
    out_rows = []
    for key in common:
        members_a, members_b = groups_a[key], groups_b[key]
        params = {p: members_a[0].get(p) for p in by}
        for metric in metrics:
            a = [v for v in (review.as_number(r.get(metric)) for r in members_a) if v is not None]
            b = [v for v in (review.as_number(r.get(metric)) for r in members_b) if v is not None]
            row = {"group": group_label(by, members_a[0]), "params": params, "metric": metric}
            out_rows.append(row | compare_values(a, b))
    return {
        "by": list(by),
        "metrics": list(metrics),
        "test": TEST,
        "effect_size": EFFECT_SIZE,
        "completed_a": len(done_a),
        "jobs_a": len(rows_a),
        "completed_b": len(done_b),
        "jobs_b": len(rows_b),
        "differs": differences(rows_a, rows_b, by),
        "only_in_a": [group_label(by, groups_a[k][0]) for k in sorted(set(groups_a) - set(groups_b))],
        "only_in_b": [group_label(by, groups_b[k][0]) for k in sorted(set(groups_b) - set(groups_a))],
        "rows": out_rows,
    }


def csv_rows(result: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """The rows flattened for CSV: one column per ``by`` parameter, then ``ROW_COLUMNS`` but ``group``."""
    by = result["by"]
    rows = [{**row["params"], **{c: row[c] for c in ROW_COLUMNS if c != "group"}} for row in result["rows"]]
    return rows, [*by, *(c for c in ROW_COLUMNS if c != "group")]


def plot_comparison(result: dict[str, Any], out: Path, names: tuple[str, str] = ("A", "B")) -> Path:
    """A PNG: one panel per metric, for each group A's and B's mean side by side with their std as error bars, and
    the p-value above the pair where there is one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = result["metrics"]
    labels = list(dict.fromkeys(row["group"] for row in result["rows"]))
    width = max(6.0, 1.1 * len(labels) + 2.5)
    fig, axes = plt.subplots(len(metrics), 1, figsize=(width, 2.6 * len(metrics) + 0.6), dpi=100, squeeze=False)
    try:
        for ax, metric in zip(axes[:, 0], metrics, strict=True):
            rows = [row for row in result["rows"] if row["metric"] == metric]
            for side, offset, color in (("a", -0.15, "#2f6fd6"), ("b", 0.15, "#e07b24")):
                shown = [(i, row) for i, row in enumerate(rows) if row[f"mean_{side}"] is not None]
                ax.errorbar(
                    [i + offset for i, _ in shown],
                    [row[f"mean_{side}"] for _, row in shown],
                    yerr=[row[f"std_{side}"] or 0.0 for _, row in shown],
                    fmt="o",
                    color=color,
                    capsize=4,
                    label=names[0] if side == "a" else names[1],
                )
            for i, row in enumerate(rows):
                if row["p_value"] is not None and row["mean_b"] is not None:
                    top = row["mean_b"] + (row["std_b"] or 0.0)
                    ax.annotate(
                        f"p={row['p_value']:.2g}",
                        (i + 0.15, top),
                        textcoords="offset points",
                        xytext=(0, 4),
                        ha="center",
                        fontsize=8,
                    )
            ax.margins(y=0.2)
            ax.set_xticks(range(len(labels)), labels, fontsize=8)
            ax.set_xlim(-0.6, len(labels) - 0.4)
            ax.set_ylabel(metric, fontsize=8)
            ax.grid(alpha=0.3, axis="y")
        axes[0, 0].legend(fontsize=8)
        axes[0, 0].set_title("mean ± std over seeds; p: Welch's t-test", fontsize=10)
        fig.tight_layout()
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, format="png")
    finally:
        plt.close(fig)
    return out
