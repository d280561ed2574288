"""``explaunch compare``, ``explaunch report --jobs`` and ``explaunch report --tradeoff`` run as a user runs them (the
installed command, in a subprocess) on real probe sweeps made here: sweep B sleeps three times as long as sweep A,
and its seed 2 fails."""

from __future__ import annotations

import csv
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from scipy import stats

from explaunch.sweepdir import records
from explaunch.sweepdir.records import JobRecord
from tests.integration.helpers import run_main

pytestmark = pytest.mark.slow

EXPLAUNCH = Path(sys.executable).with_name("explaunch")
PROBE = ("experiment_type=probe", "batch=8,16", "seed=0,1,2", "tracking=none", "energy.enabled=false")


def explaunch(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(EXPLAUNCH), *map(str, args)], capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def multirun(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """multirun/before (probe sleeps 0.05 s, 6 jobs) and multirun/after (0.15 s; seed 2 fails at both batches)."""
    cwd = tmp_path_factory.mktemp("compare")
    before = run_main(
        "-m",
        *PROBE,
        "experiment_type.duration_s=0.05",
        "hydra/launcher=basic",
        "hydra.sweep.dir=multirun/before",
        cwd=cwd,
    )
    assert before.returncode == 0, before.stderr[-3000:]
    after = run_main(
        "-m",
        *PROBE,
        "experiment_type.duration_s=0.15",
        "experiment_type.fail=raise",
        "experiment_type.fail_seeds=[2]",
        "hydra/launcher=basic",
        "hydra.sweep.dir=multirun/after",
        cwd=cwd,
    )
    assert after.returncode == 1, after.stderr[-3000:]  # two jobs failed
    return cwd / "multirun"


def slept(sweep_dir: Path, batch: str) -> list[float]:
    """slept_s of the completed jobs at this batch, read from their job.json files."""
    return [
        record.metrics["slept_s"]
        for _, record in records.iter_job_records(sweep_dir)
        if record.status == records.COMPLETED and f"batch={batch}" in record.overrides
    ]


def test_compare_json_matches_a_hand_computation_and_scipy(multirun: Path) -> None:
    proc = explaunch("compare", multirun / "before", multirun / "after", "--metrics", "slept_s", "--json")

    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["by"] == ["batch"]  # swept in both; seed excluded; the duration is what differs
    assert result["differs"] == {
        "experiment_type.duration_s": {"a": ["0.05"], "b": ["0.15"]},
        "experiment_type.fail": {"a": [None], "b": ["raise"]},
        "experiment_type.fail_seeds": {"a": [None], "b": ["[2]"]},
    }
    assert (result["completed_b"], result["jobs_b"]) == (4, 6)
    assert [row["group"] for row in result["rows"]] == ["batch=8", "batch=16"]
    for row in result["rows"]:
        batch = row["params"]["batch"]
        a, b = slept(multirun / "before", batch), slept(multirun / "after", batch)
        assert (row["n_a"], row["n_b"]) == (3, 2)  # seed 2 failed in B: only completed jobs count
        assert row["mean_a"] == pytest.approx(sum(a) / 3)
        assert row["std_a"] == pytest.approx(statistics.stdev(a))
        assert row["diff"] == pytest.approx(sum(b) / 2 - sum(a) / 3)
        assert row["diff"] == pytest.approx(0.1, abs=0.03)  # slept 0.15 s against 0.05 s
        assert row["diff_pct"] == pytest.approx(100 * row["diff"] / row["mean_a"])
        expected = stats.ttest_ind(b, a, equal_var=False)
        assert row["t"] == pytest.approx(expected.statistic)
        assert row["p_value"] == pytest.approx(expected.pvalue)
        assert row["df"] == pytest.approx(expected.df)
        pooled = (((len(a) - 1) * statistics.variance(a) + (len(b) - 1) * statistics.variance(b)) / 3) ** 0.5
        assert row["hedges_g"] == pytest.approx((sum(b) / 2 - sum(a) / 3) / pooled * (1 - 3 / (4 * 5 - 9)))


def test_compare_table_csv_and_plot(multirun: Path, tmp_path: Path) -> None:
    table, figure = tmp_path / "compare.csv", tmp_path / "compare.png"

    proc = explaunch("compare", multirun / "before", multirun / "after", "--csv", table, "--plot", figure)

    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].endswith("(6 of 6 jobs completed)") and lines[1].endswith("(4 of 6 jobs completed)")
    assert lines[2].startswith("differs (besides the groups): experiment_type.duration_s: 0.05 in A, 0.15 in B; ")
    assert any(line.startswith("8 ") and "slept_s" in line for line in lines)
    with table.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["batch"] for r in rows} == {"8", "16"} and "slept_s" in {r["metric"] for r in rows}
    with Image.open(figure) as image:
        assert image.format == "PNG"


def test_compare_bad_input_is_one_line_exit_2(multirun: Path, tmp_path: Path) -> None:
    figure = tmp_path / "never.png"
    proc = explaunch("compare", multirun / "before", multirun / "after", "--metrics", "accuracy", "--plot", figure)

    assert proc.returncode == 2
    assert proc.stdout == ""
    [line] = proc.stderr.splitlines()
    assert line.startswith("error: --metrics=accuracy: no such metric in either sweep; in both: slept_s, batch_size")
    assert not figure.exists()


def test_report_jobs_lists_past_failures_across_sweeps(multirun: Path) -> None:
    proc = explaunch("report", multirun, "--jobs", "--where", "status=failed", "--json")

    assert proc.returncode == 1  # failed jobs shown
    rows = json.loads(proc.stdout)
    assert [(r["sweep"], r["status"], r["error_type"]) for r in rows] == [("after", "failed", "ValueError")] * 2
    assert all(r["error_message"] == "probe: failing on purpose (seed 2)" for r in rows)
    assert all("seed=2" in r["overrides"] for r in rows)

    every = explaunch("report", multirun, "--jobs", "--sort", "duration_s")
    lines = every.stdout.splitlines()
    assert lines[0].split()[:5] == ["sweep", "job", "status", "start_time", "duration_s"]
    assert len(lines) == 1 + 12
    durations = [float(line.split()[4]) for line in lines[1:]]
    assert durations == sorted(durations, reverse=True)


def test_report_tradeoff_on_a_fairness_sweep(tmp_path: Path) -> None:
    sweep = tmp_path / "fairness"
    values = {"0.0": [(0.86, 0.40), (0.84, 0.36)], "0.5": [(0.84, 0.20), (0.82, 0.18)], "1.0": [(0.80, 0.22)]}
    num = 0
    for lam, pairs in values.items():
        for seed, (accuracy, gap) in enumerate(pairs):
            record = JobRecord(
                status=records.COMPLETED,
                overrides=[f"lam={lam}", f"seed={seed}"],
                config={},
                config_hash=None,
                start_time="2026-03-01T10:00:00+00:00",
                end_time="2026-03-01T10:00:01+00:00",
                duration_s=1.0,
                job_num=num,
                metrics={"accuracy": accuracy, "demographic_parity_difference": gap},
            )
            records.write_job_record(sweep / str(num), record)
            num += 1
    figure = tmp_path / "tradeoff.png"

    proc = explaunch("report", sweep, "--tradeoff", "accuracy", "demographic_parity_difference", "--out", figure)

    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["lam", "n", "accuracy", "demographic_parity_difference", "front"]
    assert [line.endswith("*") for line in lines[1:4]] == [True, True, False]  # lam=1.0: beaten by lam=0.5
    assert "better: higher accuracy, lower demographic_parity_difference" in lines[4]
    with Image.open(figure) as image:
        assert image.format == "PNG" and image.size == (750, 500)

    result = json.loads(
        explaunch("report", sweep, "--tradeoff", "accuracy", "demographic_parity_difference", "--json").stdout
    )
    assert result["front"] == ["lam=0.5", "lam=0.0"]
    assert result["points"][1]["x_mean"] == pytest.approx(0.83) and result["points"][1]["y_mean"] == pytest.approx(0.19)
