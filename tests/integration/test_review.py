"""``explaunch report`` and ``explaunch validate`` on real sweeps made here: the fairness trade-off over lam x seed
(no MLflow store: the job folders alone), and a probe sweep looked at while it runs."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from PIL import Image
from scipy import stats

from explaunch.cli import main
from explaunch.sweepdir import records
from tests.conftest import MAIN, ROOT
from tests.integration.helpers import run_main

pytestmark = pytest.mark.slow

EXPLAUNCH = Path(sys.executable).with_name("explaunch")
GAP = "demographic_parity_difference"


def explaunch(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """The installed command, as a user runs it."""
    return subprocess.run([str(EXPLAUNCH), *map(str, args)], capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def fairness_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """lam 0 and 1, three seeds each: 6 jobs of about 0.3 s on 2 workers, tracking off."""
    cwd = tmp_path_factory.mktemp("fairness")
    sweep_dir = cwd / "multirun" / "fairness"
    proc = run_main(
        "-m",
        "experiment_type=fairness_tradeoff",
        "lam=0.0,1.0",
        "seed=0,1,2",
        "tracking=none",
        "energy.min_window_s=0.5",  # a short energy window: low quality, said in the report
        "hydra.launcher.n_jobs=2",
        f"hydra.sweep.dir={sweep_dir}",
        cwd=cwd,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (cwd / "mlflow.db").exists()
    return sweep_dir


def job_records(sweep_dir: Path) -> dict[str, records.JobRecord]:
    return {str(path.relative_to(sweep_dir)): record for path, record in records.iter_job_records(sweep_dir)}


def override(record: records.JobRecord, key: str) -> str:
    return next(o.split("=", 1)[1] for o in record.overrides if o.startswith(f"{key}="))


def metric_by_lam(sweep_dir: Path, metric: str) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for record in job_records(sweep_dir).values():
        out.setdefault(override(record, "lam"), []).append(record.metrics[metric])
    return out


def write_rules(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_report_rows_match_the_job_records(fairness_sweep: Path) -> None:
    result = explaunch("report", fairness_sweep, "--json", "--metrics", "all")

    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    recorded = job_records(fairness_sweep)
    assert [row["job"] for row in rows] == sorted(recorded, key=int)
    for row in rows:
        record = recorded[row["job"]]
        assert row["status"] == record.status == records.COMPLETED
        assert row["job_num"] == record.job_num
        assert (row["lam"], row["seed"]) == (override(record, "lam"), override(record, "seed"))
        assert row["duration_s"] == record.duration_s
        assert {k: row[k] for k in record.metrics} == record.metrics
    assert {(row["lam"], row["seed"]) for row in rows} == {(lam, s) for lam in ("0.0", "1.0") for s in "012"}


def test_report_table_has_swept_columns_and_the_experiments_metrics(fairness_sweep: Path) -> None:
    result = explaunch("report", fairness_sweep)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = lines[0].split()
    assert header[:5] == ["job", "status", "lam", "seed", "duration_s"]
    assert {"accuracy", GAP, "energy_joules", "job_energy_joules"} <= set(header)
    assert len(lines) == 1 + 6 + 2
    assert lines[-2] == "same in every job: experiment_type=fairness_tradeoff tracking=none energy.min_window_s=0.5"
    assert lines[-1].startswith("energy is low quality in 6 of 6 jobs (job 0: window ")  # under 5 s


def test_group_by_lam_means_match_a_hand_computation(fairness_sweep: Path) -> None:
    result = explaunch("report", fairness_sweep, "--group-by", "lam", "--metrics", f"accuracy,{GAP}", "--json")

    assert result.returncode == 0, result.stderr
    groups = {g["lam"]: g for g in json.loads(result.stdout)}
    for metric in ("accuracy", GAP):
        for lam, values in metric_by_lam(fairness_sweep, metric).items():
            mean = sum(values) / len(values)
            std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
            assert groups[lam]["n"] == 3
            assert groups[lam][f"{metric}_mean"] == pytest.approx(mean, rel=1e-12)
            assert groups[lam][f"{metric}_std"] == pytest.approx(std, rel=1e-9)


def test_where_sort_and_csv_on_a_real_sweep(fairness_sweep: Path, tmp_path: Path) -> None:
    out = tmp_path / "lam1.csv"

    result = explaunch("report", fairness_sweep, "--where", "lam=1", "--sort", GAP, "--asc", "--csv", out, "--json")

    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [row["lam"] for row in rows] == ["1.0"] * 3
    gaps = [row[GAP] for row in rows]
    assert gaps == sorted(gaps)
    assert gaps == sorted(metric_by_lam(fairness_sweep, GAP)["1.0"])
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines[0].split(",")[:5] == ["job", "job_num", "status", "overrides", "experiment_type"]
    assert len(lines) == 4
    assert [float(line.split(",")[lines[0].split(",").index(GAP)]) for line in lines[1:]] == gaps


def test_plot_writes_a_valid_png_with_error_bars_over_seeds(fairness_sweep: Path, tmp_path: Path) -> None:
    out = tmp_path / "gap.png"

    result = explaunch("report", fairness_sweep, "--plot", GAP, "--x", "lam", "--out", out)

    assert result.returncode == 0, result.stderr
    assert f"plot: {out}" in result.stdout
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(out) as image:
        image.verify()
    with Image.open(out) as image:
        assert image.format == "PNG"
        assert image.size == (700, 450)


def test_report_on_the_parent_folder_lists_the_sweep(fairness_sweep: Path) -> None:
    result = explaunch("report", fairness_sweep.parent, "--json")

    assert result.returncode == 0, result.stderr
    (sweep,) = json.loads(result.stdout)
    assert sweep["path"] == "fairness"
    assert (sweep["jobs"], sweep["completed"], sweep["failed"], sweep["running"]) == (6, 6, 0, 0)


def test_unknown_metric_is_one_error_line_exit_2(fairness_sweep: Path) -> None:
    result = explaunch("report", fairness_sweep, "--sort", "acuracy")

    assert result.returncode == 2
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: --sort=acuracy: no such metric in this sweep; available: ")
    assert ", accuracy, " in line


# ---- validate -------------------------------------------------------------------------------------------------
def test_validate_fails_an_out_of_range_rule_and_passes_true_ones(fairness_sweep: Path, tmp_path: Path) -> None:
    true_rules = write_rules(
        tmp_path / "true.yaml",
        f"required: [accuracy, {GAP}]\nranges:\n  accuracy: {{min: 0.5, max: 1.0}}\n"
        "rules:\n  beats_chance: 'balanced_accuracy > 0.5 and lam in (0, 1)'\n",
    )
    out_of_range = write_rules(tmp_path / "false.yaml", "ranges:\n  accuracy: {max: 0.5}\n")

    passing = explaunch("validate", fairness_sweep, "--rules", true_rules)
    failing = explaunch("validate", fairness_sweep, "--rules", out_of_range, "--json")

    assert passing.returncode == 0, passing.stdout + passing.stderr
    assert passing.stdout.splitlines()[-1] == "sweep quality: 1.000 (24/24 checks passed): PASS"
    assert failing.returncode == 1, failing.stderr
    outcome = json.loads(failing.stdout)
    assert outcome["passed"] is False
    assert outcome["quality"] == 0.0
    accuracies = {job: r.metrics["accuracy"] for job, r in job_records(fairness_sweep).items()}
    assert {c["job"]: c["value"] for c in outcome["checks"]} == accuracies
    assert all(c["message"] == f"{c['value']:.6g} outside [-inf, 0.5]" for c in outcome["checks"])


@pytest.mark.parametrize("test", ["welch", "mannwhitney"])
def test_validate_p_value_matches_scipy_on_the_same_numbers(fairness_sweep: Path, tmp_path: Path, test: str) -> None:
    rules = write_rules(
        tmp_path / "compare.yaml",
        f"compare:\n  penalty_narrows_gap:\n    metric: {GAP}\n    a: {{lam: 0}}\n    b: {{lam: 1}}\n"
        f"    test: {test}\n    expect: a_greater\n    alpha: 0.1\n",
    )

    result = explaunch("validate", fairness_sweep, "--rules", rules, "--json")

    (comparison,) = json.loads(result.stdout)["comparisons"]
    by_lam = metric_by_lam(fairness_sweep, GAP)
    a, b = by_lam["0.0"], by_lam["1.0"]
    assert sorted(comparison["values_a"]) == sorted(a)
    assert sorted(comparison["values_b"]) == sorted(b)
    if test == "welch":
        expected = stats.ttest_ind(a, b, equal_var=False, alternative="greater")
    else:
        expected = stats.mannwhitneyu(a, b, alternative="greater")
    assert comparison["p_value"] == pytest.approx(float(expected.pvalue), rel=1e-9)
    assert result.returncode == (0 if float(expected.pvalue) < 0.1 else 1)
    assert comparison["passed"] is (float(expected.pvalue) < 0.1)


def test_the_shipped_example_rules_pass_on_the_fairness_sweep(fairness_sweep: Path) -> None:
    result = explaunch("validate", fairness_sweep, "--rules", ROOT / "examples" / "rules.yaml")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "compare.penalty_narrows_parity_gap" in result.stdout
    assert result.stdout.splitlines()[-1].endswith("checks passed): PASS")


def test_validate_with_a_bad_rules_file_is_one_line_exit_2(fairness_sweep: Path, tmp_path: Path) -> None:
    rules = write_rules(tmp_path / "bad.yaml", "ranges:\n  accuracy: {minimum: 0.5}\n")

    result = explaunch("validate", fairness_sweep, "--rules", rules)

    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == ["error: ranges.accuracy.minimum=0.5: unknown key; allowed: min, max"]


# ---- a sweep that is still running ----------------------------------------------------------------------------
def report_rows(sweep_dir: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[dict[str, object]]]:
    code = main(["report", str(sweep_dir), "--json"])
    return code, json.loads(capsys.readouterr().out)


def statuses_of(rows: Sequence[dict[str, object]]) -> list[object]:
    return [row["status"] for row in rows]


def test_report_follows_a_sweep_while_it_runs_and_after_it_stops(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep_dir = tmp_path / "live"
    cmd = [sys.executable, str(MAIN), "-m", "experiment_type=probe", "seed=0,1,2,3",
           "experiment_type.duration_s=1.5", "experiment_type.fail=raise", "experiment_type.fail_seeds=[0]",
           "tracking=none", "hydra/launcher=basic", f"hydra.sweep.dir={sweep_dir}"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        seen: list[object] = []
        for _ in range(600):
            if (sweep_dir / "0" / records.JOB_FILE).exists() and (sweep_dir / "1" / ".hydra").exists():
                code, rows = report_rows(sweep_dir, capsys)
                seen = statuses_of(rows)
                if seen[1] == "running":
                    break
            time.sleep(0.1)
        assert seen == ["failed", "running", "pending", "pending"], proc.poll()
        assert code == 1  # a job failed
        assert rows[0]["error"] == "ValueError: probe: failing on purpose (seed 0)"
        assert [row["seed"] for row in rows] == ["0", "1", "2", "3"]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=120)
    assert proc.returncode == 130

    code, rows = report_rows(sweep_dir, capsys)
    after = statuses_of(rows)
    assert code == 1
    assert after[0] == "failed"
    assert "running" not in after
    assert "pending" not in after
    assert set(after[1:]) <= {"completed", "interrupted", "not run"}
    assert "not run" in after


def test_report_where_a_tag_set_on_the_command_line(tmp_path: Path) -> None:
    """``+tags.stage=...`` goes into each job's record; ``report --where stage=tested`` keeps that sweep's jobs."""
    root = tmp_path / "multirun"
    for stage in ("tested", "draft"):
        proc = run_main(
            "-m",
            "experiment_type=probe",
            "seed=0,1",
            f"+tags.stage={stage}",
            "tracking=none",
            f"hydra.sweep.dir={root / stage}",
            cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
    tested = root / "tested"
    assert [getattr(r, "tags", None) for r in job_records(tested).values()] == [{"stage": "tested"}] * 2
    recorded = json.loads((tested / "0" / records.JOB_FILE).read_text(encoding="utf-8"))
    assert recorded["tags"] == {"stage": "tested"}

    result = explaunch("report", tested, "--where", "stage=tested", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [(row["job"], row["seed"], row["stage"]) for row in rows] == [("0", "0", "tested"), ("1", "1", "tested")]
    result = explaunch("report", tested, "--where", "stage=draft")
    assert (result.returncode, result.stdout.splitlines()[0]) == (0, "no job matches")

    result = explaunch("report", root, "--jobs", "--where", "stage=tested", "--sort", "cpu_efficiency", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert {(row["sweep"], row["stage"]) for row in rows} == {("tested", "tested")}
    assert len(rows) == 2 and all(isinstance(row["cpu_efficiency"], float) for row in rows)
