"""``explaunch report``, called in-process through ``explaunch.cli.main``; plus the installed command itself."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from explaunch.cli import main
from explaunch.sweepdir import records
from explaunch.sweepdir.records import JobError, JobRecord

COMPLETED_METRICS = [
    {"throughput_e2e_tokens_per_s": 100.0, "latency_batch_p50_s": 0.5, "flops_total": 1e9},
    {"throughput_e2e_tokens_per_s": 180.0, "latency_batch_p50_s": 0.75, "flops_total": 2e9},
]


def job(job_num: int, *, failed: bool = False) -> JobRecord:
    return JobRecord(
        status=records.FAILED if failed else records.COMPLETED,
        overrides=["model=tiny", f"batch_size={2**job_num}"],
        config={"model": "tiny", "batch_size": 2**job_num},
        config_hash=f"hash{job_num}",
        start_time="2025-01-01T00:00:00+00:00",
        end_time="2025-01-01T00:00:02+00:00",
        duration_s=2.0 + job_num,
        job_num=job_num,
        metrics={} if failed else dict(COMPLETED_METRICS[job_num]),
        error=JobError(type="RuntimeError", message="CUDA out of memory") if failed else None,
    )


@pytest.fixture
def sweep_with_a_failure(tmp_path: Path) -> Path:
    """Hydra's multirun layout: jobs 0 and 1 completed, job 2 failed."""
    sweep_dir = tmp_path / "multirun" / "2025-01-01" / "00-00-00"
    records.write_job_record(sweep_dir / "0", job(0))
    records.write_job_record(sweep_dir / "1", job(1))
    records.write_job_record(sweep_dir / "2", job(2, failed=True))
    return sweep_dir


@pytest.fixture
def completed_sweep(tmp_path: Path) -> Path:
    sweep_dir = tmp_path / "sweep"
    records.write_job_record(sweep_dir / "0", job(0))
    records.write_job_record(sweep_dir / "1", job(1))
    return sweep_dir


def test_report_table_has_a_header_and_one_line_per_job(
    sweep_with_a_failure: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["report", str(sweep_with_a_failure)])
    out = capsys.readouterr().out

    lines = out.splitlines()
    assert len(lines) == 5
    header = lines[0].split()
    assert header[:4] == ["job", "status", "batch_size", "duration_s"]  # the swept override as its own column
    assert "throughput_e2e_tokens_per_s" in header
    assert "latency_batch_p50_s" in header
    assert "flops_total" not in header  # only headline metrics
    assert [line.split()[:3] for line in lines[1:4]] == [
        ["0", records.COMPLETED, "1"],
        ["1", records.COMPLETED, "2"],
        ["2", records.FAILED, "4"],
    ]
    assert "180" in lines[2]
    assert "RuntimeError: CUDA out of memory" in lines[3]
    assert lines[4] == "same in every job: model=tiny"  # an override no job varies: said once


def test_report_json_lists_every_job_with_overrides_and_metrics(
    sweep_with_a_failure: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["report", str(sweep_with_a_failure), "--json"])
    table = json.loads(capsys.readouterr().out)

    assert isinstance(table, list)
    assert len(table) == 3
    assert all(isinstance(row, dict) for row in table)
    assert [row["job"] for row in table] == ["0", "1", "2"]
    assert [row["status"] for row in table] == [records.COMPLETED, records.COMPLETED, records.FAILED]
    assert [row["overrides"] for row in table] == [
        "model=tiny batch_size=1",
        "model=tiny batch_size=2",
        "model=tiny batch_size=4",
    ]
    assert table[0]["throughput_e2e_tokens_per_s"] == 100.0
    assert table[1]["latency_batch_p50_s"] == 0.75
    assert "flops_total" not in table[0]
    assert "throughput_e2e_tokens_per_s" not in table[2]
    assert table[2]["error"] == "RuntimeError: CUDA out of memory"
    assert "error" not in table[0]


def test_report_exits_1_when_a_job_failed(sweep_with_a_failure: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(sweep_with_a_failure)]) == 1
    assert main(["report", str(sweep_with_a_failure), "--json"]) == 1
    assert capsys.readouterr().err == ""


def test_report_exits_0_when_every_job_completed(completed_sweep: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(completed_sweep)]) == 0
    assert main(["report", str(completed_sweep), "--json"]) == 0
    assert capsys.readouterr().err == ""


def test_report_reads_a_single_run_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records.write_job_record(tmp_path, job(0))

    assert main(["report", str(tmp_path), "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert [row["job"] for row in table] == ["."]


def test_report_on_a_missing_folder_prints_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope"

    code = main(["report", str(missing)])
    captured = capsys.readouterr()

    assert code == 1
    assert captured.out == ""
    err_lines = captured.err.splitlines()
    assert len(err_lines) == 1
    assert err_lines[0].startswith("error: ")
    assert str(missing) in err_lines[0]


def test_report_on_a_folder_without_job_records_prints_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "notes.txt").write_text("not a job record", encoding="utf-8")

    code = main(["report", str(tmp_path)])
    captured = capsys.readouterr()

    assert code == 1
    assert captured.out == ""
    err_lines = captured.err.splitlines()
    assert len(err_lines) == 1
    assert err_lines[0].startswith("error: ")
    assert "job.json" in err_lines[0]


def test_report_on_a_corrupt_job_record_prints_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "0").mkdir()
    (tmp_path / "0" / records.JOB_FILE).write_text("{not json", encoding="utf-8")

    code = main(["report", str(tmp_path)])
    captured = capsys.readouterr()

    assert code == 1
    err_lines = captured.err.splitlines()
    assert len(err_lines) == 1
    assert err_lines[0].startswith("error: unreadable job record")


def test_explaunch_help_exits_0() -> None:
    script = Path(sys.executable).with_name("explaunch")
    assert script.is_file(), f"console script not installed next to {sys.executable}"

    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120, check=False)

    assert result.returncode == 0, result.stderr
    assert "usage: explaunch" in result.stdout
    assert "report" in result.stdout


def test_python_m_explaunch_help_exits_0() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "explaunch", "--help"], capture_output=True, text=True, timeout=120, check=False
    )

    assert result.returncode == 0, result.stderr
    assert "usage: explaunch" in result.stdout


def test_importing_the_cli_does_not_import_torch() -> None:
    code = "import explaunch.cli, sys; print('torch' in sys.modules)"

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_running_a_report_does_not_import_torch(sweep_with_a_failure: Path) -> None:
    code = (
        "import sys\n"
        "from explaunch.cli import main\n"
        "code = main(['report', sys.argv[1]])\n"
        "print('torch' in sys.modules, code)\n"
    )

    result = subprocess.run(
        [sys.executable, "-c", code, str(sweep_with_a_failure)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "False 1"


# ---- a sweep over lam x seed, with a failed job -----------------------------------------------------------------
ACCURACY = {("0.0", 0): 0.80, ("0.0", 1): 0.84, ("0.0", 2): 0.83, ("0.5", 0): 0.71, ("0.5", 1): 0.75, ("0.5", 2): None}
GAP = {("0.0", 0): 0.30, ("0.0", 1): 0.36, ("0.0", 2): 0.33, ("0.5", 0): 0.10, ("0.5", 1): 0.12, ("0.5", 2): None}


def seeded_job(num: int, lam: str, seed: int) -> JobRecord:
    accuracy, gap = ACCURACY[(lam, seed)], GAP[(lam, seed)]
    failed = accuracy is None or gap is None
    return JobRecord(
        status=records.FAILED if failed else records.COMPLETED,
        overrides=["experiment_type=fairness_tradeoff", f"lam={lam}", f"seed={seed}"],
        config={"lam": float(lam), "seed": seed},
        config_hash=f"h{num}",
        start_time="2025-02-03T04:05:06+00:00",
        end_time="2025-02-03T04:05:08+00:00",
        duration_s=1.0 + num,
        job_num=num,
        metrics={}
        if accuracy is None or gap is None
        else {"accuracy": accuracy, "dp_gap": gap, "job_energy_joules": 10.0 + num},
        error=JobError(type="ValueError", message="diverged") if failed else None,
    )


@pytest.fixture
def lam_sweep(tmp_path: Path) -> Path:
    sweep_dir = tmp_path / "multirun" / "2025-02-03" / "04-05-06"
    for num, (lam, seed) in enumerate(ACCURACY):
        records.write_job_record(sweep_dir / str(num), seeded_job(num, lam, seed))
    return sweep_dir


def report_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[dict[str, object]]]:
    code = main(["report", *args, "--json"])
    return code, json.loads(capsys.readouterr().out)


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: ")
    return lines[0]


def test_swept_overrides_are_columns_named_by_their_key(lam_sweep: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, rows = report_json(capsys, str(lam_sweep))

    assert code == 1  # job 5 failed
    assert [(r["lam"], r["seed"], r["status"]) for r in rows] == [
        ("0.0", "0", "completed"),
        ("0.0", "1", "completed"),
        ("0.0", "2", "completed"),
        ("0.5", "0", "completed"),
        ("0.5", "1", "completed"),
        ("0.5", "2", "failed"),
    ]
    assert [r.get("accuracy") for r in rows] == [*list(ACCURACY.values())[:5], None]
    assert rows[5]["error"] == "ValueError: diverged"
    assert rows[0]["job_energy_joules"] == 10.0
    assert rows[0]["experiment_type"] == "fairness_tradeoff"  # the same in every job: in the JSON, not the table


def test_group_by_gives_mean_std_and_n_over_seeds(lam_sweep: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, groups = report_json(capsys, str(lam_sweep), "--group-by", "lam", "--metrics", "accuracy,dp_gap")

    assert code == 1
    assert [(g["lam"], g["n"]) for g in groups] == [("0.0", 3), ("0.5", 3)]
    low, high = groups
    # by hand: mean of 0.80, 0.84, 0.83; sample std (n - 1)
    mean = (0.80 + 0.84 + 0.83) / 3
    std = (((0.80 - mean) ** 2 + (0.84 - mean) ** 2 + (0.83 - mean) ** 2) / 2) ** 0.5
    assert low["accuracy_mean"] == pytest.approx(mean)
    assert low["accuracy_std"] == pytest.approx(std)
    assert low["accuracy_n"] == 3
    # the failed job counts in n but has no accuracy
    assert high["accuracy_mean"] == pytest.approx((0.71 + 0.75) / 2)
    assert high["accuracy_std"] == pytest.approx(((0.02**2 + 0.02**2) / 1) ** 0.5)
    assert high["accuracy_n"] == 2
    assert high["dp_gap_mean"] == pytest.approx(0.11)


def test_group_by_table_shows_mean_plus_minus_std(lam_sweep: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["report", str(lam_sweep), "--group-by", "lam", "--metrics", "accuracy"])
    lines = capsys.readouterr().out.splitlines()

    assert lines[0].split() == ["lam", "n", "accuracy"]
    assert lines[1].split() == ["0.0", "3", "0.8233", "±", "0.02082"]
    assert lines[2].split() == ["0.5", "3", "0.73", "±", "0.02828", "(n=2)"]


def test_where_filters_on_overrides_and_status_and_sort_orders(
    lam_sweep: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, rows = report_json(capsys, str(lam_sweep), "--where", "lam=0", "--sort", "accuracy")
    assert code == 0  # the failed job is filtered out
    assert [r["accuracy"] for r in rows] == [0.84, 0.83, 0.80]  # lam=0 matches 0.0; largest first

    _, rows = report_json(capsys, str(lam_sweep), "--where", "lam=0.0", "--sort", "accuracy", "--asc")
    assert [r["accuracy"] for r in rows] == [0.80, 0.83, 0.84]

    # one key given twice: either value; two keys: both
    _, rows = report_json(capsys, str(lam_sweep), "--where", "seed=0", "--where", "seed=2", "--where", "lam=0.5")
    assert [(r["lam"], r["seed"]) for r in rows] == [("0.5", "0"), ("0.5", "2")]

    code, rows = report_json(capsys, str(lam_sweep), "--where", "status=failed")
    assert code == 1
    assert [r["job"] for r in rows] == ["5"]

    # a sort by metric puts jobs without it (the failed one) last
    _, rows = report_json(capsys, str(lam_sweep), "--sort", "dp_gap", "--asc")
    assert [r["job"] for r in rows] == ["3", "4", "0", "2", "1", "5"]


def test_csv_holds_the_rows_shown(lam_sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out" / "jobs.csv"

    main(["report", str(lam_sweep), "--where", "lam=0.5", "--metrics", "accuracy", "--csv", str(out)])

    assert f"csv: {out}" in capsys.readouterr().out
    with out.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["job"], r["lam"], r["seed"], r["status"], r["accuracy"]) for r in rows] == [
        ("3", "0.5", "0", "completed", "0.71"),
        ("4", "0.5", "1", "completed", "0.75"),
        ("5", "0.5", "2", "failed", ""),
    ]
    assert rows[2]["error"] == "ValueError: diverged"


def test_grouped_csv_has_mean_std_and_n_columns(
    lam_sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "groups.csv"

    main(["report", str(lam_sweep), "--group-by", "lam", "--metrics", "accuracy", "--csv", str(out)])

    capsys.readouterr()
    with out.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["lam", "n", "accuracy_mean", "accuracy_std", "accuracy_n"]
    assert float(rows[1]["accuracy_mean"]) == pytest.approx(0.73)
    assert rows[1]["accuracy_n"] == "2"


def test_plot_writes_a_png_of_metric_against_a_parameter(
    lam_sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import matplotlib.image

    out = tmp_path / "plots" / "accuracy.png"

    code = main(["report", str(lam_sweep), "--plot", "accuracy", "--x", "lam", "--hue", "seed", "--out", str(out)])

    assert code == 1  # the table is still printed, and the failed job still counts
    assert f"plot: {out}" in capsys.readouterr().out
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(out)
    assert image.shape[0] > 100
    assert image.shape[1] > 100


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--sort", "acuracy"], "error: --sort=acuracy: no such metric in this sweep; available: accuracy, dp_gap"),
        (["--group-by", "lamda"], "error: --group-by=lamda: no such swept parameter in this sweep; available: "),
        (["--where", "modle=x"], "error: --where=modle=x: no such swept parameter in this sweep; available: "),
        (["--where", "lam"], "error: --where=lam: expected KEY=VALUE"),
        (["--metrics", "accuracy,nope"], "error: --metrics=nope: no such metric in this sweep; available: "),
        (["--plot", "accuracy"], "error: --plot=accuracy: needs --x PARAM"),
        (["--plot", "accuracy", "--x", "lam"], "error: --plot=accuracy: needs --out FILE.png"),
        (["--plot", "nope", "--x", "lam", "--out", "p.png"], "error: --plot=nope: no such metric in this sweep"),
        (["--plot", "accuracy", "--x", "lr", "--out", "p.png"], "error: --x=lr: no such swept parameter"),
        (["--plot", "accuracy", "--x", "lam", "--out", "p.jpg"], "error: --out=p.jpg: must name a .png file"),
        (["--x", "lam"], "error: --x=lam: only goes with --plot METRIC"),
    ],
)
def test_unknown_metric_or_parameter_is_one_error_line_exit_2(
    lam_sweep: Path, capsys: pytest.CaptureFixture[str], args: list[str], expected: str
) -> None:
    code = main(["report", str(lam_sweep), *args])

    assert code == 2
    line = one_error_line(capsys)
    assert line.startswith(expected)
    if "swept parameter" in expected:
        assert "available: experiment_type, lam, seed" in line


def test_a_folder_of_sweeps_lists_the_sweeps(
    lam_sweep: Path, sweep_with_a_failure: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    multirun = lam_sweep.parents[1]
    assert sweep_with_a_failure.parents[1] == multirun

    code, sweeps = report_json(capsys, str(multirun))

    assert code == 0
    by_path = {s["path"]: s for s in sweeps}
    assert set(by_path) == {"2025-02-03/04-05-06", "2025-01-01/00-00-00"}
    lam = by_path["2025-02-03/04-05-06"]
    assert (lam["jobs"], lam["completed"], lam["failed"], lam["running"]) == (6, 5, 1, 0)
    assert lam["date"] == "2025-02-03 04:05" or str(lam["date"]).startswith("2025-02-03")
    other = by_path["2025-01-01/00-00-00"]
    assert (other["jobs"], other["completed"], other["failed"]) == (3, 2, 1)

    main(["report", str(multirun)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:5] == ["path", "date", "jobs", "completed", "running"]
    assert len(lines) == 3


def test_options_for_one_sweep_on_a_folder_of_sweeps_are_refused(
    lam_sweep: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["report", str(lam_sweep.parents[1]), "--group-by", "lam"])

    assert code == 2
    assert "--group-by=lam: applies to one sweep" in one_error_line(capsys)


def test_a_running_sweep_shows_running_and_pending_jobs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """As the sweeper leaves a live sweep: plan.json naming this (live) process, a finished job, a started job
    (Hydra's .hydra/ but no job.json yet) and a job not started."""
    sweep_dir = tmp_path / "live"
    records.write_job_record(sweep_dir / "0", seeded_job(0, "0.0", 0))
    (sweep_dir / "1" / ".hydra").mkdir(parents=True)
    (sweep_dir / "1" / ".hydra" / "overrides.yaml").write_text("- lam=0.0\n- seed=1\n", encoding="utf-8")
    plan = {
        "started": 0,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "parallelism": 1,
        "jobs": [
            {"num": n, "job_dir": str(n), "overrides": ["lam=0.0", f"seed={n}"], "skipped": False} for n in range(3)
        ],
    }
    records.write_json_atomic(sweep_dir / "plan.json", plan)

    code, rows = report_json(capsys, str(sweep_dir))

    assert code == 0  # nothing failed (yet)
    assert [(r["job"], r["status"], r["seed"]) for r in rows] == [
        ("0", "completed", "0"),
        ("1", "running", "1"),
        ("2", "pending", "2"),
    ]
    assert rows[0]["accuracy"] == 0.80
    assert rows[1]["duration_s"] is not None  # so far


def test_a_damaged_sweep_in_a_listing_says_why_and_the_others_still_show(
    lam_sweep: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    damaged = lam_sweep.parent / "09-09-09" / "0"
    damaged.mkdir(parents=True)
    (damaged / records.JOB_FILE).write_text("{not json", encoding="utf-8")

    code, sweeps = report_json(capsys, str(lam_sweep.parents[1]))

    assert code == 0
    by_path = {s["path"]: s for s in sweeps}
    assert by_path["2025-02-03/04-05-06"]["jobs"] == 6
    assert by_path["2025-02-03/09-09-09"]["jobs"] == 0
    assert str(by_path["2025-02-03/09-09-09"]["error"]).startswith("unreadable job record")


def test_jobs_done_before_a_resume_are_reported_completed(
    completed_sweep: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The sweeper's plan.json marks them ``skipped`` for the resumed run; their status is still completed."""
    plan = {
        "started": 0.0,
        "pid": 0,
        "host": "elsewhere",
        "parallelism": 1,
        "jobs": [
            {"num": n, "job_dir": str(n), "overrides": ["model=tiny", f"batch_size={2**n}"], "skipped": True}
            for n in (0, 1)
        ],
    }
    records.write_json_atomic(completed_sweep / "plan.json", plan)
    assert main(["report", str(completed_sweep), "--json"]) == 0
    assert [row["status"] for row in json.loads(capsys.readouterr().out)] == [records.COMPLETED] * 2


# ---- an LLM sweep in today's record format: energy with its quality ---------------------------------------------
SHORT_WINDOW = "window 0.40 s < 5 s"


def llm_job(num: int, batch: int, seed: int, *, low: bool = False, failed: bool = False) -> JobRecord:
    """A job as llm_inference records it: speed of the window, energy per token, ``info.energy`` with its quality
    (``low`` for a window of 0.4 s)."""
    window_s = 0.4 if low else 10.3
    tokens = 400.0 * batch * (1 + seed)
    joules = 25.0 * window_s
    metrics = {
        "throughput_e2e_tokens_per_s": tokens / window_s,
        "throughput_decode_tokens_per_s": 1.2 * tokens / window_s,
        "latency_batch_p50_s": 0.1 * batch,
        "ttft_p50_s": 0.01 * batch,
        "memory_peak_rss_mib": 900.0 + batch,
        "energy_joules": joules,
        "energy_per_output_token_j": joules / tokens,
        "tokens_per_joule": tokens / joules,
        "energy_window_s": window_s,
        "energy_iterations": 3.0 if low else 28.0,
        "energy_cpu_joules": joules,
        "queries_per_kwh": 1e6,
        "job_energy_joules": 3 * joules,
    }
    component = {"joules": joules, "source": "counter", "scope": "apportioned", "reads": 2 if low else 52}
    energy = {
        "window_s": window_s,
        "iterations": 3 if low else 28,
        "joules": joules,
        "components": {"cpu": component},
        "quality": "low" if low else "ok",
        "quality_reasons": [SHORT_WINDOW] if low else [],
    }
    return JobRecord(
        status=records.FAILED if failed else records.COMPLETED,
        overrides=[f"batch={batch}", f"seed={seed}"],
        config={"batch": batch, "seed": seed},
        config_hash=f"llm{num}",
        start_time="2025-03-01T00:00:00+00:00",
        end_time="2025-03-01T00:00:30+00:00",
        duration_s=30.0,
        job_num=num,
        metrics={} if failed else metrics,
        info={} if failed else {"energy": energy},
        energy={} if failed else {**energy, "joules": 3 * joules, "region": "the whole job"},
        error=JobError(type="RuntimeError", message="CUDA out of memory") if failed else None,
    )


@pytest.fixture
def llm_sweep(tmp_path: Path) -> Path:
    """batch 1, 4 x seed 0, 1; job 0's window lasted 0.4 s (its energy is low quality), job 4 failed."""
    sweep_dir = tmp_path / "llm"
    jobs = [llm_job(0, 1, 0, low=True), llm_job(1, 1, 1), llm_job(2, 4, 0), llm_job(3, 4, 1)]
    jobs.append(llm_job(4, 16, 0, failed=True))
    for record in jobs:
        records.write_job_record(sweep_dir / str(record.job_num), record)
    return sweep_dir


def test_default_columns_are_the_headline_metrics_then_energy_quality(
    llm_sweep: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["report", str(llm_sweep)])
    lines = capsys.readouterr().out.splitlines()

    assert lines[0].split() == [
        "job",
        "status",
        "batch",
        "seed",
        "duration_s",
        "throughput_e2e_tokens_per_s",
        "throughput_decode_tokens_per_s",
        "latency_batch_p50_s",
        "ttft_p50_s",
        "memory_peak_rss_mib",
        "energy_joules",
        "energy_per_output_token_j",
        "tokens_per_joule",
        "job_energy_joules",
        "energy_quality",
        "error",
    ]
    quality_at = lines[0].index("energy_quality")
    cells = [line[quality_at : quality_at + len("energy_quality")].strip() for line in lines[1:6]]
    assert cells == ["low", "ok", "ok", "ok", ""]  # the failed job measured none


def test_a_sweep_with_low_quality_energy_says_how_many_and_why_under_the_table(
    llm_sweep: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["report", str(llm_sweep)])
    lines = capsys.readouterr().out.splitlines()

    assert len(lines) == 7  # header, five jobs, the note
    assert lines[-1] == f"energy is low quality in 1 of 4 jobs (job 0: {SHORT_WINDOW})"


def test_no_energy_quality_note_when_every_energy_is_ok(llm_sweep: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["report", str(llm_sweep), "--where", "batch=4"])
    out = capsys.readouterr().out

    assert "energy_quality" in out.splitlines()[0]
    assert "low quality" not in out


def test_report_json_and_csv_carry_energy_quality(
    llm_sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "jobs.csv"
    code, rows = report_json(capsys, str(llm_sweep), "--csv", str(out))

    assert code == 1  # job 4 failed
    assert [row.get("energy_quality") for row in rows] == ["low", "ok", "ok", "ok", None]
    assert rows[0]["energy_per_output_token_j"] == pytest.approx(10.0 / 400.0)
    with out.open(encoding="utf-8", newline="") as handle:
        assert [r["energy_quality"] for r in csv.DictReader(handle)] == ["low", "ok", "ok", "ok", ""]


def test_where_sort_and_plot_take_the_new_metrics_and_energy_quality(
    llm_sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, rows = report_json(capsys, str(llm_sweep), "--where", "energy_quality=low")
    assert [row["job"] for row in rows] == ["0"]

    _, rows = report_json(capsys, str(llm_sweep), "--sort", "energy_per_output_token_j", "--asc")
    assert [row["job"] for row in rows] == ["0", "3", "2", "1", "4"]  # the failed job, without it, last

    _, rows = report_json(capsys, str(llm_sweep), "--sort", "throughput_decode_tokens_per_s")
    assert [row["job"] for row in rows] == ["0", "3", "2", "1", "4"]

    png = tmp_path / "decode.png"
    main(["report", str(llm_sweep), "--plot", "throughput_decode_tokens_per_s", "--x", "batch", "--out", str(png)])
    assert f"plot: {png}" in capsys.readouterr().out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_group_by_marks_a_group_with_a_low_quality_energy(llm_sweep: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, groups = report_json(capsys, str(llm_sweep), "--group-by", "batch", "--metrics", "energy_joules")

    assert code == 1
    assert [(g["batch"], g.get("energy_quality")) for g in groups] == [("1", "low"), ("4", "ok"), ("16", None)]

    main(["report", str(llm_sweep), "--group-by", "batch", "--metrics", "energy_joules"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["batch", "n", "energy_joules", "energy_quality"]
    assert lines[1].split()[-1] == "low"
    assert lines[-1] == f"energy is low quality in 1 of 4 jobs (job 0: {SHORT_WINDOW})"


def test_a_sweep_recorded_before_the_renames_shows_the_new_names_and_no_energy_quality(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """job.json of an earlier version: ``throughput_tokens_per_s``, ``memory_peak_rss_mb``, codecarbon's energy."""
    old = job(0).to_dict()
    old["metrics"] = {"throughput_tokens_per_s": 100.0, "memory_peak_rss_mb": 512.0, "energy_joules": 5.0}
    old["info"] = {"energy": {"codecarbon": {"energy_kwh": 5.0 / 3.6e6}}}
    records.write_json_atomic(tmp_path / "0" / records.JOB_FILE, old)

    main(["report", str(tmp_path)])
    lines = capsys.readouterr().out.splitlines()

    header = lines[0].split()
    assert header[-3:] == ["throughput_e2e_tokens_per_s", "memory_peak_rss_mib", "energy_joules"]
    assert "energy_quality" not in header
    assert not any("low quality" in line for line in lines)
