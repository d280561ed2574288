"""Job and sweep records: round trips, schema checks, atomic writes, ordering and the sweep summary."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from typing import Any

import pytest

from explaunch.errors import RecordError
from explaunch.sweepdir import records
from explaunch.sweepdir.records import JobError, JobRecord


def make_record(
    *,
    job_num: int | None = 0,
    status: str = records.COMPLETED,
    overrides: list[str] | None = None,
    metrics: dict[str, float] | None = None,
    error: JobError | None = None,
) -> JobRecord:
    return JobRecord(
        status=status,
        overrides=overrides if overrides is not None else [f"batch_size={job_num}"],
        config={"model": {"name": "tiny", "layers": 2}, "batch_size": job_num, "seed": 0},
        config_hash="abc123",
        start_time="2025-01-01T00:00:00+00:00",
        end_time="2025-01-01T00:00:01.5+00:00",
        duration_s=1.5,
        job_num=job_num,
        metrics=metrics if metrics is not None else {"throughput_e2e_tokens_per_s": 123.5},
        info={"device": "cpu", "torch": "2.x"},
        error=error,
    )


def write_raw_job_json(job_dir: Path, data: Any) -> Path:
    job_dir.mkdir(parents=True, exist_ok=True)
    path = job_dir / records.JOB_FILE
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


# --- job records ---------------------------------------------------------------------------------------------------


def test_completed_job_record_round_trips(tmp_path: Path) -> None:
    record = make_record(
        job_num=3,
        overrides=["model=tiny", "batch_size=8"],
        metrics={"throughput_e2e_tokens_per_s": 1234.5, "latency_batch_p50_s": 0.25, "flops_total": 1e12},
    )

    path = records.write_job_record(tmp_path / "3", record)

    assert path == tmp_path / "3" / records.JOB_FILE
    assert path.is_file()
    assert records.read_job_record(path) == record


def test_a_record_written_before_the_metric_renames_is_read_under_the_new_names(tmp_path: Path) -> None:
    """job.json on disk keeps what it was written with; readers see today's names, kWh turned into joules."""
    old_metrics = {
        "throughput_tokens_per_s": 100.0,
        "memory_peak_rss_mb": 512.0,
        "job_gpu_energy_joules_nvml": 40.0,
        "energy_gpu_kwh": 2e-5,
        "energy_duration_s": 3.0,
        "energy_joules": 80.0,
        "tokens_per_joule": 2.0,
    }
    write_raw_job_json(tmp_path, make_record(metrics=old_metrics).to_dict())

    metrics = records.read_job_record(tmp_path).metrics

    assert list(metrics) == [
        "throughput_e2e_tokens_per_s",
        "memory_peak_rss_mib",
        "job_energy_gpu_joules",
        "energy_gpu_joules",
        "energy_window_s",
        "energy_joules",
        "tokens_per_joule",
    ]
    assert metrics["energy_gpu_joules"] == pytest.approx(72.0)
    assert metrics["throughput_e2e_tokens_per_s"] == 100.0 and metrics["energy_joules"] == 80.0
    assert "throughput_tokens_per_s" in (tmp_path / records.JOB_FILE).read_text(encoding="utf-8")


def test_a_record_whose_resource_columns_said_mb_is_read_under_their_mib_names(tmp_path: Path) -> None:
    """The sampler's ``_mb`` columns always held MiB (1024 * 1024 bytes): the job's resource metrics and its
    ``resources`` peak and mean are read as ``_mib``, values unchanged; ``disk_free_gb`` (1e9 bytes) keeps its name."""
    old_metrics = {
        "resources_peak_rss_mb": 512.0,
        "resources_mean_rss_mb": 400.0,
        "resources_peak_gpu3_memory_mb": 2048.0,
        "resources_peak_disk_write_mb": 1.5,
        "resources_mean_net_recv_mb": 0.25,
        "resources_peak_disk_free_gb": 40.0,
    }
    old_resources = {"samples": 3, "peak": {"rss_mb": 512.0, "disk_free_gb": 40.0}, "mean": {"rss_mb": 400.0}}
    write_raw_job_json(tmp_path, {**make_record(metrics=old_metrics).to_dict(), "resources": old_resources})

    record = records.read_job_record(tmp_path)

    assert record.metrics == {
        "resources_peak_rss_mib": 512.0,
        "resources_mean_rss_mib": 400.0,
        "resources_peak_gpu3_memory_mib": 2048.0,
        "resources_peak_disk_write_mib": 1.5,
        "resources_mean_net_recv_mib": 0.25,
        "resources_peak_disk_free_gb": 40.0,
    }
    assert record.resources["peak"] == {"rss_mib": 512.0, "disk_free_gb": 40.0}
    assert record.resources["mean"] == {"rss_mib": 400.0} and record.resources["samples"] == 3
    assert "resources_peak_rss_mb" in (tmp_path / records.JOB_FILE).read_text(encoding="utf-8")


def test_a_metric_under_both_names_keeps_the_new_names_value() -> None:
    assert records.current_metric_names({"throughput_e2e_tokens_per_s": 2.0, "throughput_tokens_per_s": 1.0}) == {
        "throughput_e2e_tokens_per_s": 2.0
    }


def test_failed_job_is_recorded_with_its_error(tmp_path: Path) -> None:
    error = JobError(type="RuntimeError", message="CUDA out of memory", traceback_file=records.TRACEBACK_FILE)
    record = make_record(job_num=1, status=records.FAILED, metrics={}, error=error)

    records.write_job_record(tmp_path, record)
    read = records.read_job_record(tmp_path)

    assert read == record
    assert read.status == records.FAILED
    assert isinstance(read.error, JobError)
    assert read.error == error


def test_job_json_is_plain_json_with_schema_version(tmp_path: Path) -> None:
    error = JobError(type="ValueError", message="bad value")
    path = records.write_job_record(tmp_path, make_record(status=records.FAILED, error=error))

    data = json.loads(path.read_text(encoding="utf-8"))

    assert data["schema_version"] == records.JOB_SCHEMA_VERSION
    assert data["status"] == records.FAILED
    assert data["error"] == {"type": "ValueError", "message": "bad value", "traceback_file": None, "bases": []}


def test_read_job_record_accepts_the_job_folder_or_the_file(tmp_path: Path) -> None:
    record = make_record(job_num=7)
    path = records.write_job_record(tmp_path / "7", record)

    assert records.read_job_record(tmp_path / "7") == record
    assert records.read_job_record(path) == record


@pytest.mark.parametrize("version", [0, 2, "1", None])
def test_wrong_job_schema_version_is_refused_with_a_clear_message(tmp_path: Path, version: object) -> None:
    data = make_record().to_dict()
    data["schema_version"] = version
    write_raw_job_json(tmp_path, data)

    with pytest.raises(RecordError) as excinfo:
        records.read_job_record(tmp_path)

    message = str(excinfo.value)
    assert "schema_version" in message
    assert repr(version) in message
    assert f"expected {records.JOB_SCHEMA_VERSION}" in message


def test_job_record_without_schema_version_is_refused(tmp_path: Path) -> None:
    data = make_record().to_dict()
    del data["schema_version"]
    write_raw_job_json(tmp_path, data)

    with pytest.raises(RecordError, match="schema_version None"):
        records.read_job_record(tmp_path)


def test_corrupt_job_json_raises_record_error(tmp_path: Path) -> None:
    path = records.write_job_record(tmp_path, make_record())
    text = path.read_text(encoding="utf-8")
    path.write_text(text[: len(text) // 2], encoding="utf-8")  # a truncated write

    with pytest.raises(RecordError, match="unreadable job record") as excinfo:
        records.read_job_record(tmp_path)
    assert str(path) in str(excinfo.value)


def test_missing_job_json_raises_record_error(tmp_path: Path) -> None:
    with pytest.raises(RecordError, match="no job record at") as excinfo:
        records.read_job_record(tmp_path)  # an existing folder without job.json
    assert str(tmp_path / records.JOB_FILE) in str(excinfo.value)

    with pytest.raises(RecordError, match="no job record at"):
        records.read_job_record(tmp_path / "missing" / records.JOB_FILE)


# --- atomic writes -------------------------------------------------------------------------------------------------


def test_write_json_atomic_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "out" / "data.json"

    records.write_json_atomic(target, {"a": 1, "b": [1, 2, 3]})

    assert sorted(p.name for p in target.parent.iterdir()) == ["data.json"]
    assert json.loads(target.read_text(encoding="utf-8")) == {"a": 1, "b": [1, 2, 3]}


def test_write_json_atomic_replaces_an_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "data.json"
    target.write_text("old contents that are longer than the new ones " * 20, encoding="utf-8")

    records.write_json_atomic(target, {"new": True})

    assert json.loads(target.read_text(encoding="utf-8")) == {"new": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.json"]


def test_failed_json_write_keeps_the_old_file_and_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "data.json"
    records.write_json_atomic(target, {"version": "old"})
    circular: dict[str, Any] = {}
    circular["self"] = circular

    with pytest.raises(ValueError, match="Circular reference"):
        records.write_json_atomic(target, circular)

    assert json.loads(target.read_text(encoding="utf-8")) == {"version": "old"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.json"]


def test_write_json_atomic_writes_unknown_types_as_strings(tmp_path: Path) -> None:
    target = tmp_path / "data.json"

    records.write_json_atomic(target, {"path": Path("a/b")})

    assert json.loads(target.read_text(encoding="utf-8")) == {"path": "a/b"}


# --- iterating job records -----------------------------------------------------------------------------------------


def test_iter_job_records_orders_by_job_number_numerically(tmp_path: Path) -> None:
    numbers = list(range(12))
    random.Random(0).shuffle(numbers)
    for num in numbers:
        # Folder names sort lexicographically as job_0, job_1, job_10, job_11, job_2, ...
        records.write_job_record(tmp_path / f"job_{num}", make_record(job_num=num))

    found = list(records.iter_job_records(tmp_path))

    assert [record.job_num for _, record in found] == list(range(12))
    assert [job_dir.name for job_dir, _ in found] == [f"job_{n}" for n in range(12)]


def test_iter_job_records_puts_jobs_without_a_number_last(tmp_path: Path) -> None:
    records.write_job_record(tmp_path / "a_single", make_record(job_num=None))
    records.write_job_record(tmp_path / "b", make_record(job_num=1))
    records.write_job_record(tmp_path / "c", make_record(job_num=0))

    found = [record.job_num for _, record in records.iter_job_records(tmp_path)]

    assert found == [0, 1, None]


def test_iter_job_records_finds_nothing_in_an_empty_folder(tmp_path: Path) -> None:
    assert list(records.iter_job_records(tmp_path)) == []


# --- sweep records -------------------------------------------------------------------------------------------------


def build_sweep(sweep_dir: Path) -> None:
    """Three jobs in Hydra's multirun layout: two completed, one failed."""
    records.write_job_record(
        sweep_dir / "0",
        make_record(
            job_num=0,
            overrides=["model=tiny", "batch_size=1"],
            metrics={"throughput_e2e_tokens_per_s": 100.0, "energy_joules": 5.0, "flops_total": 1e9},
        ),
    )
    records.write_job_record(
        sweep_dir / "1",
        make_record(
            job_num=1,
            overrides=["model=tiny", "batch_size=2"],
            metrics={"throughput_e2e_tokens_per_s": 180.0, "energy_joules": 6.0, "flops_total": 2e9},
        ),
    )
    records.write_job_record(
        sweep_dir / "2",
        make_record(
            job_num=2,
            status=records.FAILED,
            overrides=["model=tiny", "batch_size=4096"],
            metrics={},
            error=JobError(type="RuntimeError", message="CUDA out of memory", traceback_file="traceback.txt"),
        ),
    )


def test_write_sweep_record_writes_json_with_one_row_per_job(tmp_path: Path) -> None:
    build_sweep(tmp_path)

    sweep = records.write_sweep_record(tmp_path)
    data = json.loads((tmp_path / records.SWEEP_FILE).read_text(encoding="utf-8"))

    assert data["schema_version"] == records.SWEEP_SCHEMA_VERSION
    assert data["sweep_dir"] == str(tmp_path)
    assert [row["job_dir"] for row in data["jobs"]] == ["0", "1", "2"]
    assert [row["job_num"] for row in data["jobs"]] == [0, 1, 2]
    assert [row["status"] for row in data["jobs"]] == [records.COMPLETED, records.COMPLETED, records.FAILED]
    assert data["jobs"][1]["overrides"] == ["model=tiny", "batch_size=2"]
    assert len(sweep.jobs) == 3


def test_sweep_record_counts_jobs_by_status(tmp_path: Path) -> None:
    build_sweep(tmp_path)

    sweep = records.write_sweep_record(tmp_path)
    data = json.loads((tmp_path / records.SWEEP_FILE).read_text(encoding="utf-8"))

    assert sweep.counts == {records.COMPLETED: 2, records.FAILED: 1}
    assert data["counts"] == {records.COMPLETED: 2, records.FAILED: 1}


def test_sweep_record_keeps_only_headline_metrics(tmp_path: Path) -> None:
    build_sweep(tmp_path)

    sweep = records.write_sweep_record(tmp_path)

    assert sweep.jobs[0].metrics == {"throughput_e2e_tokens_per_s": 100.0, "energy_joules": 5.0}
    assert sweep.jobs[1].metrics == {"throughput_e2e_tokens_per_s": 180.0, "energy_joules": 6.0}
    assert sweep.jobs[2].metrics == {}
    # Every metric is still in the job record itself.
    assert records.read_job_record(tmp_path / "0").metrics["flops_total"] == 1e9


def test_sweep_record_carries_the_error_of_failed_jobs(tmp_path: Path) -> None:
    build_sweep(tmp_path)

    sweep = records.write_sweep_record(tmp_path)

    assert [row.error for row in sweep.jobs] == [None, None, "RuntimeError: CUDA out of memory"]


def test_sweep_csv_has_one_row_per_job_with_headline_metrics_and_errors(tmp_path: Path) -> None:
    build_sweep(tmp_path)

    records.write_sweep_record(tmp_path)
    with (tmp_path / records.SWEEP_CSV).open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames
        rows = list(reader)

    assert header == [
        "job_dir",
        "job_num",
        "overrides",
        "status",
        "duration_s",
        "throughput_e2e_tokens_per_s",
        "energy_joules",
        "error",
    ]
    assert len(rows) == 3
    assert [row["job_dir"] for row in rows] == ["0", "1", "2"]
    assert [row["status"] for row in rows] == [records.COMPLETED, records.COMPLETED, records.FAILED]
    assert rows[1]["overrides"] == "model=tiny batch_size=2"
    assert float(rows[1]["throughput_e2e_tokens_per_s"]) == 180.0
    assert rows[2]["throughput_e2e_tokens_per_s"] == ""
    assert [row["error"] for row in rows] == ["", "", "RuntimeError: CUDA out of memory"]


def test_write_sweep_record_leaves_no_temp_files(tmp_path: Path) -> None:
    build_sweep(tmp_path)

    records.write_sweep_record(tmp_path)
    records.write_sweep_record(tmp_path)  # rewriting replaces both files

    assert sorted(p.name for p in tmp_path.iterdir()) == ["0", "1", "2", records.SWEEP_CSV, records.SWEEP_FILE]


def test_sweep_record_round_trips(tmp_path: Path) -> None:
    build_sweep(tmp_path)

    written = records.write_sweep_record(tmp_path)
    read = records.read_sweep_record(tmp_path)

    assert read == written
    assert read.counts == {records.COMPLETED: 2, records.FAILED: 1}


def test_missing_sweep_record_raises_record_error(tmp_path: Path) -> None:
    with pytest.raises(RecordError, match="no sweep record at"):
        records.read_sweep_record(tmp_path)


def test_corrupt_sweep_record_raises_record_error(tmp_path: Path) -> None:
    (tmp_path / records.SWEEP_FILE).write_text('{"schema_version": 1, "sweep_dir": ', encoding="utf-8")

    with pytest.raises(RecordError, match="unreadable sweep record"):
        records.read_sweep_record(tmp_path)


def test_wrong_sweep_schema_version_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    build_sweep(tmp_path)
    records.write_sweep_record(tmp_path)
    path = tmp_path / records.SWEEP_FILE
    data = json.loads(path.read_text(encoding="utf-8"))
    data["schema_version"] = 99
    path.write_text(json.dumps(data), encoding="utf-8")

    with pytest.raises(RecordError, match=r"sweep record schema_version 99 is not supported \(expected 1\)"):
        records.read_sweep_record(tmp_path)


@pytest.mark.parametrize("content", ["[]", "null", '"x"', '{"schema_version": 1}', '{"schema_version": 1, "bogus": 2}'])
def test_job_json_of_the_wrong_shape_raises_record_error(tmp_path: Path, content: str) -> None:
    (tmp_path / records.JOB_FILE).write_text(content)
    with pytest.raises(RecordError):
        records.read_job_record(tmp_path)


def test_sweep_json_that_is_not_an_object_raises_record_error(tmp_path: Path) -> None:
    (tmp_path / records.SWEEP_FILE).write_text("[]")
    with pytest.raises(RecordError, match="JSON object"):
        records.read_sweep_record(tmp_path)


def test_records_are_readable_by_others_as_the_umask_allows(tmp_path: Path) -> None:
    import os

    old = os.umask(0o022)
    try:
        records.write_json_atomic(tmp_path / "r.json", {"a": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o644


# --- tags and efficiency ------------------------------------------------------------------------------------------


def test_a_records_tags_round_trip_and_an_old_record_has_none(tmp_path: Path) -> None:
    import dataclasses

    tagged = dataclasses.replace(make_record(job_num=1), tags={"stage": "tested"})
    records.write_job_record(tmp_path / "1", tagged)
    assert records.read_job_record(tmp_path / "1").tags == {"stage": "tested"}
    old = make_record(job_num=2).to_dict()
    del old["tags"]  # written before jobs had tags
    write_raw_job_json(tmp_path / "2", old)
    assert records.read_job_record(tmp_path / "2").tags == {}


def test_the_sweep_record_reports_the_mean_cpu_efficiency_of_the_jobs_that_have_one(tmp_path: Path) -> None:
    for num, efficiency in ((0, 0.25), (1, 0.75), (2, None)):
        metrics = {"throughput_e2e_tokens_per_s": 1.0} | ({} if efficiency is None else {"cpu_efficiency": efficiency})
        records.write_job_record(tmp_path / str(num), make_record(job_num=num, metrics=metrics))
    written = records.write_sweep_record(tmp_path)
    assert written.mean_cpu_efficiency == pytest.approx(0.5)
    assert json.loads((tmp_path / records.SWEEP_FILE).read_text())["mean_cpu_efficiency"] == pytest.approx(0.5)
    assert records.read_sweep_record(tmp_path) == written
    assert "cpu_efficiency" not in written.jobs[0].metrics  # rows keep the headline metrics only


def test_a_sweep_without_efficiencies_and_an_old_sweep_record_have_no_mean(tmp_path: Path) -> None:
    build_sweep(tmp_path)
    assert records.write_sweep_record(tmp_path).mean_cpu_efficiency is None
    data = json.loads((tmp_path / records.SWEEP_FILE).read_text())
    del data["mean_cpu_efficiency"]  # written before sweeps had one
    (tmp_path / records.SWEEP_FILE).write_text(json.dumps(data))
    assert records.read_sweep_record(tmp_path).mean_cpu_efficiency is None
