"""``explaunch report``, called in-process through ``explaunch.cli.main``; plus the installed command itself."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from explaunch import records
from explaunch.cli import main
from explaunch.records import JobError, JobRecord

COMPLETED_METRICS = [
    {"throughput_tokens_per_s": 100.0, "latency_batch_p50_s": 0.5, "flops_total": 1e9},
    {"throughput_tokens_per_s": 180.0, "latency_batch_p50_s": 0.75, "flops_total": 2e9},
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
    assert "throughput_tokens_per_s" in header
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
    assert table[0]["throughput_tokens_per_s"] == 100.0
    assert table[1]["latency_batch_p50_s"] == 0.75
    assert "flops_total" not in table[0]
    assert "throughput_tokens_per_s" not in table[2]
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
