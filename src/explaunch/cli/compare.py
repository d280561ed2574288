"""``explaunch compare SWEEP_A SWEEP_B``: two sweeps compared group by group (mean ± std, B - A, Welch's t-test,
Hedges' g) from their job folders alone. The work is in explaunch.review.comparison; this module checks the options,
then prints, writes the CSV and the plot (only once everything was checked: a bad option leaves no file behind)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from explaunch.errors import ConfigError
from explaunch.review import comparison
from explaunch.review import rows as review
from explaunch.review.sweeps import list_sweeps
from explaunch.table import cell, format_table


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "compare",
        help="compare two sweeps group by group: mean ± std, B - A, Welch's t-test and Hedges' g",
        description="Compare the completed jobs of two sweeps, group by group (a group: one value of each --by "
        "parameter; default: the parameters swept in either sweep that both have, seeds excluded). For each group "
        "in both and each metric: mean ± std and n on each side, B - A (and in %% of A), Welch's t-test "
        "(two-sided) and Hedges' g (B - A over the pooled std, small-sample corrected). A side with fewer than 2 "
        "jobs gets no test, said in the row.",
    )
    parser.add_argument("sweep_a", type=Path, help="the sweep to compare against (A: before)")
    parser.add_argument("sweep_b", type=Path, help="the other sweep (B: after)")
    parser.add_argument(
        "--metrics", metavar="M1,M2|all", help="metrics to compare (default: A's headline ones that B has too)"
    )
    parser.add_argument("--by", metavar="P1,P2", help="the parameters that make a group (default: see above)")
    parser.add_argument("--json", action="store_true", help="print the comparison as JSON")
    parser.add_argument("--csv", metavar="FILE", type=Path, help="also write the rows to this CSV file")
    parser.add_argument("--plot", metavar="FILE.png", type=Path, help="also write a PNG: A and B side by side")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.plot is not None and args.plot.suffix.lower() != ".png":
        raise ConfigError("--plot", args.plot, "must name a .png file")
    rows_a, rows_b = load_sweep("SWEEP_A", args.sweep_a), load_sweep("SWEEP_B", args.sweep_b)
    names = (f"A ({args.sweep_a})", f"B ({args.sweep_b})")
    for key, path, rows in (("SWEEP_A", args.sweep_a, rows_a), ("SWEEP_B", args.sweep_b, rows_b)):
        if not review.completed(rows):
            raise ConfigError(key, path, "no completed job to compare (only completed jobs count)")
    by_option = args.by
    if by_option is None:
        by = comparison.default_by(rows_a, rows_b)
    else:
        by = [p.strip() for p in by_option.split(",") if p.strip()]
        comparison.check_by(by, list(zip(names, (rows_a, rows_b), strict=True)))
    done = [(names[0], review.completed(rows_a)), (names[1], review.completed(rows_b))]
    metrics, left_out = comparison.choose_metrics(args.metrics, done)
    result = comparison.compare_sweeps(rows_a, rows_b, by, metrics, by_option)
    result = {"sweep_a": str(args.sweep_a), "sweep_b": str(args.sweep_b), **result}

    if args.csv:
        review.write_csv(*comparison.csv_rows(result), args.csv)
    if args.plot:
        comparison.plot_comparison(result, args.plot, (f"A: {args.sweep_a}", f"B: {args.sweep_b}"))
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(render(result, left_out))
    if args.plot:
        print(f"plot: {args.plot}")
    if args.csv:
        print(f"csv: {args.csv}")
    return 0


def load_sweep(key: str, path: Path) -> list[dict[str, Any]]:
    """One sweep's rows; a folder of sweeps (``multirun/``) is refused rather than read as one sweep."""
    if path.is_dir() and not review.is_sweep_dir(path):
        sweeps = list_sweeps(path)
        if len(sweeps) > 1:
            raise ConfigError(
                key, path, f"holds {len(sweeps)} sweeps; compare two of them (explaunch report {path} lists them)"
            )
    return review.load_rows(path)


def spread(mean: float | None, std: float | None) -> str:
    if mean is None:
        return ""
    return cell(mean) if std is None else f"{cell(mean)} ± {cell(std)}"


def render(result: dict[str, Any], left_out: list[str]) -> str:
    by = result["by"]
    shown = []
    for row in result["rows"]:
        shown.append(
            {
                **(row["params"] if by else {"group": row["group"]}),
                "metric": row["metric"],
                "n_a": row["n_a"],
                "A": spread(row["mean_a"], row["std_a"]),
                "n_b": row["n_b"],
                "B": spread(row["mean_b"], row["std_b"]),
                "B - A": row["diff"],
                "B - A %": None if row["diff_pct"] is None else f"{row['diff_pct']:+.3g}%",
                "p_value": row["p_value"],
                "g": row["hedges_g"],
                "note": row["note"],
            }
        )
    columns = [*(by or ["group"]), "metric", "n_a", "A", "n_b", "B", "B - A", "B - A %", "p_value", "g", "note"]
    lines = [
        f"A: {result['sweep_a']} ({result['completed_a']} of {result['jobs_a']} jobs completed)",
        f"B: {result['sweep_b']} ({result['completed_b']} of {result['jobs_b']} jobs completed)",
        "",
        format_table(shown, columns),
        "",
        "mean ± sample std over the group's completed jobs (seeds); p: Welch's t-test, two-sided; "
        "g: Hedges' g, (B - A) / pooled std, small-sample corrected",
    ]
    if result["differs"]:

        def values(found: list[Any]) -> str:
            return ",".join("(none)" if v is None else str(v) for v in found)

        differs = [f"{p}: {values(v['a'])} in A, {values(v['b'])} in B" for p, v in result["differs"].items()]
        lines.insert(2, "differs (besides the groups): " + "; ".join(differs))
    for side in ("a", "b"):
        if result[f"only_in_{side}"]:
            lines.append(f"only in {side.upper()} (not compared): {', '.join(result[f'only_in_{side}'])}")
    if left_out:
        lines.append(f"not in B (not compared): {', '.join(left_out)}")
    return "\n".join(lines)
