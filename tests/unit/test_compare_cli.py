"""``explaunch compare``, ``explaunch report --jobs`` and ``explaunch report --tradeoff``, called in-process through
``explaunch.cli.main`` on sweeps written with ``records.write_job_record``: the rules (default groups, what counts)
and every bad input (one line, exit 2, no file written)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from explaunch.cli import main
from explaunch.review import comparison
from explaunch.sweepdir import records
from explaunch.sweepdir.records import JobError, JobRecord

# lam -> accuracy per seed; gap = 0.5 - accuracy / 2, so that both metrics move
SWEEP_A = {"0.0": [0.85, 0.86, 0.84], "0.5": [0.80, 0.82, 0.81], "1.0": [0.75, 0.76, 0.74]}
SWEEP_B = {"0.0": [0.87, 0.88, 0.86], "0.5": [0.84], "2.0": [0.70, 0.71, 0.72]}


def record(num: int, overrides: list[str], metrics: dict[str, float], error: JobError | None = None) -> JobRecord:
    return JobRecord(
        status=records.FAILED if error else records.COMPLETED,
        overrides=overrides,
        config={},
        config_hash=None,
        start_time=f"2026-03-01T10:00:{num:02d}+00:00",
        end_time=f"2026-03-01T10:00:{num + 1:02d}+00:00",
        duration_s=1.0 + num,
        job_num=num,
        metrics={} if error else metrics,
        error=error,
    )


def write_sweep(
    sweep_dir: Path, accuracy: dict[str, list[float]], extra: str = "model=tiny", fail: bool = True
) -> Path:
    num = 0
    for lam, values in accuracy.items():
        for seed, value in enumerate(values):
            metrics = {"accuracy": value, "dp_gap": 0.5 - value / 2}
            records.write_job_record(sweep_dir / str(num), record(num, [f"lam={lam}", f"seed={seed}", extra], metrics))
            num += 1
    if fail:  # a failed job of a group both sweeps have: it must not count
        error = JobError(type="ValueError", message="diverged at step 3")
        records.write_job_record(sweep_dir / str(num), record(num, ["lam=0.0", "seed=9", extra], {}, error))
    return sweep_dir


@pytest.fixture
def two_sweeps(tmp_path: Path) -> tuple[Path, Path]:
    multirun = tmp_path / "multirun"
    return (
        write_sweep(multirun / "2026-03-01" / "10-00-00", SWEEP_A),
        write_sweep(multirun / "2026-03-02" / "10-00-00", SWEEP_B, extra="model=small"),
    )


def run_json(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, Any]:
    code = main([*map(str, args), "--json"])
    return code, json.loads(capsys.readouterr().out)


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


# ---- compare ----------------------------------------------------------------------------------------------------
def test_compare_groups_by_the_shared_swept_parameters_and_counts_completed_jobs_only(
    two_sweeps: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = two_sweeps

    code, result = run_json(capsys, "compare", a, b, "--metrics", "accuracy")

    assert code == 0
    assert result["by"] == ["lam"]  # seed is a repeat; model differs between the sweeps but is swept in neither
    assert result["differs"] == {"model": {"a": ["tiny"], "b": ["small"]}}
    assert [row["group"] for row in result["rows"]] == ["lam=0.0", "lam=0.5"]
    assert result["only_in_a"] == ["lam=1.0"] and result["only_in_b"] == ["lam=2.0"]
    low, mid = result["rows"]
    assert (low["n_a"], low["n_b"]) == (3, 3)  # the failed lam=0.0 job of each sweep is left out
    assert low["diff"] == pytest.approx(0.02)
    assert low["hedges_g"] == pytest.approx(1.6)  # 0.02 / 0.01 * (1 - 3 / 15)
    assert (mid["n_b"], mid["p_value"]) == (1, None)
    assert mid["note"] == "no test: n=1 in B (needs 2 a side)"
    assert (result["completed_a"], result["jobs_a"]) == (9, 10)


def test_compare_table_has_one_row_per_group_and_metric(
    two_sweeps: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = two_sweeps

    assert main(["compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out

    lines = out.splitlines()
    assert lines[0] == f"A: {a} (9 of 10 jobs completed)"
    assert lines[2] == "differs (besides the groups): model: tiny in A, small in B"
    header = lines[4].split()
    assert header[:4] == ["lam", "metric", "n_a", "A"]
    assert "p_value" in header and "g" in header
    assert sum(1 for line in lines if line.startswith(("0.0 ", "0.5 "))) == 4  # 2 groups x accuracy, dp_gap
    assert "0.85 ± 0.01" in out and "+2.35%" in out
    assert "no test: n=1 in B (needs 2 a side)" in out
    assert "only in A (not compared): lam=1.0" in out


def test_by_given_explicitly_and_sweeps_with_one_configuration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = write_sweep(tmp_path / "a", {"0.0": [0.8, 0.81, 0.82]}, fail=False)
    b = write_sweep(tmp_path / "b", {"0.0": [0.9, 0.91, 0.92]}, fail=False)

    _, result = run_json(capsys, "compare", a, b, "--metrics", "accuracy")
    assert result["by"] == [] and [r["group"] for r in result["rows"]] == ["all jobs"]
    assert result["rows"][0]["diff"] == pytest.approx(0.1)

    _, result = run_json(capsys, "compare", a, b, "--metrics", "accuracy", "--by", "seed")
    assert [r["group"] for r in result["rows"]] == ["seed=0", "seed=1", "seed=2"]
    assert {r["note"] for r in result["rows"]} == {"no test: n=1 in A and n=1 in B (needs 2 a side)"}


def test_a_value_written_differently_still_meets_its_group(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write_sweep(tmp_path / "a", {"0.1": [0.8, 0.81], "1": [0.7, 0.71]}, fail=False)
    b = write_sweep(tmp_path / "b", {"0.10": [0.9, 0.91], "1.0": [0.6, 0.61]}, fail=False)

    _, result = run_json(capsys, "compare", a, b, "--metrics", "accuracy")

    assert [r["group"] for r in result["rows"]] == ["lam=0.1", "lam=1"]


def test_csv_and_plot_are_written(
    two_sweeps: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = two_sweeps
    table, figure = tmp_path / "out" / "compare.csv", tmp_path / "out" / "compare.png"

    assert main(["compare", str(a), str(b), "--csv", str(table), "--plot", str(figure)]) == 0

    with table.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0])[:3] == ["lam", "metric", "n_a"]
    assert [(r["lam"], r["metric"]) for r in rows] == [
        ("0.0", "accuracy"),
        ("0.0", "dp_gap"),
        ("0.5", "accuracy"),
        ("0.5", "dp_gap"),
    ]
    assert float(rows[0]["diff"]) == pytest.approx(0.02)
    assert rows[2]["p_value"] == "" and rows[2]["note"].startswith("no test")
    with Image.open(figure) as image:
        assert image.format == "PNG" and image.size[0] >= 600
    out = capsys.readouterr().out
    assert f"plot: {figure}" in out and f"csv: {table}" in out


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--metrics", "nosuch"], "error: --metrics=nosuch: no such metric in either sweep; in both: accuracy, dp_gap"),
        (["--by", "model,batch"], "error: --by=batch: no such parameter in A ("),
        (["--by", "model"], "error: --by=model: no group is in both sweeps; A has: model=tiny; B has: model=small"),
        (["--plot", "out.pdf"], "error: --plot=out.pdf: must name a .png file"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    two_sweeps: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], line: str
) -> None:
    a, b = two_sweeps
    table = tmp_path / "never.csv"

    code = main(["compare", str(a), str(b), *args, "--csv", str(table)])

    assert code == 2
    assert one_error_line(capsys).startswith(line)
    assert not table.exists()


def test_a_metric_one_sweep_lacks_and_sweeps_without_a_common_group_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = write_sweep(tmp_path / "a", {"0.0": [0.8, 0.81], "0.5": [0.7, 0.71]}, fail=False)
    b = tmp_path / "b"
    for num, lam in enumerate(["1.0", "1.0", "2.0", "2.0"]):
        records.write_job_record(b / str(num), record(num, [f"lam={lam}", f"seed={num}"], {"accuracy": 0.5}))

    assert main(["compare", str(a), str(b), "--metrics", "dp_gap"]) == 2
    assert (
        one_error_line(capsys) == f"error: --metrics=dp_gap: no such metric in B ({b}); in both: accuracy, duration_s"
    )

    assert main(["compare", str(a), str(b), "--metrics", "accuracy"]) == 2
    assert one_error_line(capsys) == (
        "error: --by=lam: no group is in both sweeps (default: the parameters swept in either sweep, seeds "
        "excluded); A has: lam=0.0, lam=0.5; B has: lam=1.0, lam=2.0"
    )


def test_a_sweep_without_completed_jobs_or_a_folder_of_sweeps_is_refused(
    two_sweeps: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, _ = two_sweeps
    failed = tmp_path / "failed"
    records.write_job_record(failed / "0", record(0, ["lam=0.0"], {}, JobError(type="OSError", message="disk")))

    assert main(["compare", str(a), str(failed)]) == 2
    assert one_error_line(capsys) == f"error: SWEEP_B={failed}: no completed job to compare (only completed jobs count)"

    multirun = a.parents[1]
    assert main(["compare", str(multirun), str(a)]) == 2
    assert one_error_line(capsys).startswith(f"error: SWEEP_A={multirun}: holds 2 sweeps; compare two of them")


def test_default_groups_take_a_parameter_swept_in_one_sweep_and_set_in_the_other() -> None:
    def rows(*overrides: str) -> list[dict[str, Any]]:
        out = []
        for text in overrides:
            row: dict[str, Any] = {"overrides": text, "status": "completed"}
            row.update(dict(part.split("=") for part in text.split()))
            out.append(row)
        return out

    a = rows("batch=8 seed=0 model=x", "batch=16 seed=1 model=x", "batch=8 seed=1 model=x")
    b = rows("batch=8 seed=0 model=y attn=sdpa", "batch=8 seed=1 model=y attn=sdpa")

    assert comparison.default_by(a, b) == ["batch"]  # swept in A, set once in B; model differs but is swept in neither
    assert comparison.differences(a, b, ["batch"]) == {
        "model": {"a": ["x"], "b": ["y"]},
        "attn": {"a": [None], "b": ["sdpa"]},
    }


# ---- report --jobs ----------------------------------------------------------------------------------------------
def test_jobs_lists_every_job_of_every_sweep_newest_sweep_first(
    two_sweeps: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = two_sweeps
    multirun = a.parents[1]
    newer = b.stat().st_mtime + 10
    os.utime(b, (newer, newer))  # find_sweeps orders by the folder's time

    code, rows = run_json(capsys, "report", multirun, "--jobs")

    assert code == 1  # failed jobs are shown
    assert len(rows) == 9 + 1 + 7 + 1
    assert rows[0]["sweep"] == "2026-03-02/10-00-00" and rows[-1]["sweep"] == "2026-03-01/10-00-00"
    assert [r["job_num"] for r in rows[:8]] == list(range(8))
    failed = [r for r in rows if r["status"] == "failed"]
    assert [(r["error_type"], r["error_message"]) for r in failed] == [("ValueError", "diverged at step 3")] * 2
    assert rows[0]["accuracy"] == 0.87 and rows[0]["overrides"] == "lam=0.0 seed=0 model=small"


def test_jobs_filters_sorts_and_writes_csv(
    two_sweeps: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    multirun = two_sweeps[0].parents[1]
    table = tmp_path / "failures.csv"

    code = main(["report", str(multirun), "--jobs", "--where", "status=failed", "--csv", str(table)])
    out = capsys.readouterr().out

    assert code == 1
    lines = out.splitlines()
    assert lines[0].split()[:5] == ["sweep", "job", "status", "start_time", "duration_s"]
    assert len([line for line in lines if " failed " in line]) == 2
    assert all("ValueError" in line and "diverged at step 3" in line for line in lines[1:3])
    with table.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["error_type"] for r in rows] == ["ValueError", "ValueError"]

    code, rows = run_json(capsys, "report", multirun, "--jobs", "--sort", "accuracy", "--asc", "--metrics", "accuracy")
    values = [r["accuracy"] for r in rows if "accuracy" in r]
    assert values == sorted(values) and values[0] == 0.70
    assert rows[-1]["status"] == "failed"  # without the metric: last

    code, rows = run_json(capsys, "report", multirun, "--jobs", "--where", "sweep=2026-03-01/10-00-00")
    assert {r["sweep"] for r in rows} == {"2026-03-01/10-00-00"}


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--group-by", "lam"], "error: --group-by=lam: applies to one sweep, not to --jobs"),
        (["--tradeoff", "accuracy", "dp_gap"], "error: --tradeoff=accuracy dp_gap: applies to one sweep, not to"),
        (["--sort", "nosuch"], "error: --sort=nosuch: no such metric in this sweep; available: accuracy, dp_gap"),
        (["--where", "nosuch=1"], "error: --where=nosuch=1: no such swept parameter in this sweep; available: lam"),
    ],
)
def test_jobs_bad_input_is_one_line_exit_2(
    two_sweeps: tuple[Path, Path], capsys: pytest.CaptureFixture[str], args: list[str], line: str
) -> None:
    assert main(["report", str(two_sweeps[0].parents[1]), "--jobs", *args]) == 2
    assert one_error_line(capsys).startswith(line)


def test_a_folder_of_sweeps_points_at_jobs_for_sort_and_where(
    two_sweeps: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(two_sweeps[0].parents[1]), "--where", "status=failed"]) == 2
    assert one_error_line(capsys).endswith("(report one of the paths it lists, or add --jobs for every job of them)")


# ---- report --tradeoff ------------------------------------------------------------------------------------------
def test_tradeoff_lists_the_points_and_the_front_and_writes_the_plot(
    two_sweeps: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, _ = two_sweeps
    figure = tmp_path / "tradeoff.png"

    code, result = run_json(capsys, "report", a, "--tradeoff", "accuracy", "dp_gap", "--out", figure)

    assert code == 0
    assert result["better"] == {"x": "max", "y": "min"}
    assert [p["label"] for p in result["points"]] == ["lam=0.0", "lam=0.5", "lam=1.0"]
    assert result["points"][0]["x_mean"] == pytest.approx(0.85)
    assert result["points"][0]["y_mean"] == pytest.approx(0.5 - 0.85 / 2)
    assert result["front"] == ["lam=0.0"]  # higher accuracy here means a smaller gap: one point beats the rest
    assert result["left_out"] == 1  # the failed job
    with Image.open(figure) as image:
        assert image.format == "PNG"


def test_tradeoff_table_marks_the_front(two_sweeps: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    a, _ = two_sweeps

    assert main(["report", str(a), "--tradeoff", "accuracy", "duration_s"]) == 0
    lines = capsys.readouterr().out.splitlines()

    assert lines[0].split() == ["lam", "n", "accuracy", "duration_s", "front"]
    assert lines[1].startswith("0.0") and lines[1].endswith("*")  # most accurate and fastest
    assert not lines[3].endswith("*")
    assert lines[4] == "better: higher accuracy, lower duration_s; * on the Pareto front (1 of 3)"


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--tradeoff", "accuracy", "nosuch"], "error: --tradeoff=nosuch: no such metric in this sweep; available:"),
        (
            ["--tradeoff", "accuracy", "job_num"],
            "error: --tradeoff=job_num: no such metric in this sweep",
        ),
        (["--tradeoff", "accuracy", "dp_gap", "--better", "y=lower"], "error: --better=y=lower: expected x=max|min"),
        (["--tradeoff", "accuracy", "dp_gap", "--out", "t.svg"], "error: --out=t.svg: must name a .png file"),
        (["--tradeoff", "accuracy", "dp_gap", "--group-by", "lam"], "error: --group-by=lam: does not go with"),
        (["--better", "x=max"], "error: --better=x=max: only goes with --tradeoff METRIC_X METRIC_Y"),
    ],
)
def test_tradeoff_bad_input_is_one_line_exit_2(
    two_sweeps: tuple[Path, Path], capsys: pytest.CaptureFixture[str], args: list[str], line: str
) -> None:
    assert main(["report", str(two_sweeps[0]), *args]) == 2
    assert one_error_line(capsys).startswith(line)


def test_tradeoff_of_a_metric_without_a_known_direction_needs_better(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = tmp_path / "probe"
    for num, (batch, seed) in enumerate([(8, 0), (8, 1), (16, 0), (16, 1)]):
        metrics = {"slept_s": 0.1 * batch + 0.01 * seed, "accuracy": 0.9 - 0.01 * batch}
        records.write_job_record(sweep / str(num), record(num, [f"batch={batch}", f"seed={seed}"], metrics))
    out = tmp_path / "t.png"

    assert main(["report", str(sweep), "--tradeoff", "accuracy", "slept_s", "--out", str(out)]) == 2
    assert one_error_line(capsys) == (
        "error: --tradeoff=slept_s: no known direction for this metric; say which is better with --better y=max or "
        "y=min"
    )
    assert not out.exists()

    code, result = run_json(capsys, "report", sweep, "--tradeoff", "accuracy", "slept_s", "--better", "slept_s=min")
    assert code == 0 and result["better"] == {"x": "max", "y": "min"}
    assert result["front"] == ["batch=8"]


def test_default_metrics_one_sweep_lacks_ask_for_metrics_naming_those_in_both(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = write_sweep(tmp_path / "a", {"0.0": [0.8, 0.81]}, fail=False)
    b = tmp_path / "b"
    for num in range(2):
        records.write_job_record(b / str(num), record(num, ["lam=0.0", f"seed={num}"], {"slept_s": 0.1}))

    assert main(["compare", str(a), str(b)]) == 2
    assert one_error_line(capsys) == (
        f"error: --metrics=(default): none of the headline metrics of A ({a}) (accuracy, dp_gap) is in B ({b}); "
        "name those to compare; in both: duration_s"
    )
    _, result = run_json(capsys, "compare", a, b, "--metrics", "duration_s")
    assert result["rows"][0]["diff"] == pytest.approx(0.0)  # jobs 0 and 1 on each side: 1 s and 2 s


def test_jobs_names_a_sweep_it_cannot_read_and_shows_the_others(
    two_sweeps: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = two_sweeps
    (b / "3" / records.JOB_FILE).write_text("{not json")

    code = main(["report", str(a.parents[1]), "--jobs", "--metrics", "accuracy"])
    lines = capsys.readouterr().out.splitlines()

    assert code == 1
    assert {line.split()[0] for line in lines[1:-1]} == {"2026-03-01/10-00-00"}
    assert lines[-1].startswith("left out, unreadable: 2026-03-02/10-00-00: ")
