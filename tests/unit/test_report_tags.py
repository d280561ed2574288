"""Tags (``+tags.stage=tested``, ``tags`` in job.json) as report columns: ``--where``, ``--sort``, ``--group-by``,
``--jobs``, ``compare --by`` and ``validate`` take them; and ``cpu_efficiency``, a metric recording adds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from explaunch.cli import main
from explaunch.errors import RecordError
from explaunch.review import rows as review
from explaunch.review.rerun_comparison import is_measured
from explaunch.sweepdir import reader as sweepdir
from explaunch.sweepdir import records
from explaunch.sweepdir.records import JobRecord

# job -> (seed, tags, cpu_efficiency); the tags as a user labels runs: two stages, one owner clashing with "status"
JOBS: dict[int, tuple[int, dict[str, str], float]] = {
    0: (0, {"stage": "tested", "status": "mine"}, 0.50),
    1: (1, {"stage": "tested", "status": "mine"}, 0.90),
    2: (2, {"stage": "draft", "status": "mine"}, 0.70),
    3: (3, {"stage": "draft", "status": "mine"}, 0.30),
}


def write_job(job_dir: Path, num: int, seed: int, tags: dict[str, str], efficiency: float) -> None:
    """A job.json written by hand (as JSON, not through JobRecord): the record's own fields and ``tags``."""
    data: dict[str, Any] = JobRecord(
        status=records.COMPLETED,
        overrides=["experiment_type=probe", f"seed={seed}"],
        config={"seed": seed},
        config_hash=f"h{num}",
        start_time="2026-01-02T03:04:05+00:00",
        end_time="2026-01-02T03:04:06+00:00",
        duration_s=1.0 + num,
        job_num=num,
        metrics={"slept_s": 0.1 * (num + 1), "cpu_efficiency": efficiency},
    ).to_dict()
    data["tags"] = tags
    job_dir.mkdir(parents=True)
    (job_dir / records.JOB_FILE).write_text(json.dumps(data), encoding="utf-8")


@pytest.fixture
def tagged_sweep(tmp_path: Path) -> Path:
    sweep_dir = tmp_path / "multirun" / "2026-01-02" / "03-04-05"
    for num, (seed, tags, efficiency) in JOBS.items():
        write_job(sweep_dir / str(num), num, seed, tags, efficiency)
    return sweep_dir


def report_json(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, Any]]:
    assert main(["report", *args, "--json"]) == 0
    rows: list[dict[str, Any]] = json.loads(capsys.readouterr().out)
    return rows


def test_tags_are_columns_named_by_their_key_or_tag_key_where_that_is_taken(tagged_sweep: Path) -> None:
    rows = review.load_rows(tagged_sweep)
    assert [row["stage"] for row in rows] == ["tested", "tested", "draft", "draft"]
    assert [row["tag:status"] for row in rows] == ["mine"] * 4  # "status" is the job's status
    assert [row["status"] for row in rows] == [records.COMPLETED] * 4
    assert rows[0]["tags"] == {"stage": "tested", "status": "mine"}
    assert review.tag_names(rows) == ["stage", "tag:status"]
    assert review.varying_tags(rows) == ["stage"]
    assert "stage" not in review.varying_params(rows)  # a label, not part of a configuration
    assert review.metric_names(rows) == ["slept_s", "cpu_efficiency", "duration_s"]


def test_where_keeps_the_jobs_with_a_tag(tagged_sweep: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = report_json(capsys, str(tagged_sweep), "--where", "stage=tested")
    assert [row["job"] for row in rows] == ["0", "1"]
    assert rows[0]["stage"] == "tested" and rows[0]["tag:status"] == "mine"

    assert main(["report", str(tagged_sweep), "--where", "stage=tested"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["job", "status", "seed"]
    assert out[-1] == "same in every job: experiment_type=probe stage=tested tag:status=mine"
    assert main(["report", str(tagged_sweep)]) == 0
    assert capsys.readouterr().out.splitlines()[0].split()[:4] == ["job", "status", "seed", "stage"]

    assert main(["report", str(tagged_sweep), "--where", "owner=me"]) == 2
    assert "available: experiment_type, seed, stage, tag:status, status, job" in capsys.readouterr().err


def test_sort_by_a_tag_and_by_cpu_efficiency(tagged_sweep: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = report_json(capsys, str(tagged_sweep), "--sort", "stage", "--asc")
    assert [row["stage"] for row in rows] == ["draft", "draft", "tested", "tested"]
    rows = report_json(capsys, str(tagged_sweep), "--sort", "cpu_efficiency")
    assert [row["job"] for row in rows] == ["1", "2", "0", "3"]
    assert [row["cpu_efficiency"] for row in rows] == [0.9, 0.7, 0.5, 0.3]


def test_group_by_a_tag_gives_cpu_efficiency_per_group(tagged_sweep: Path, capsys: pytest.CaptureFixture[str]) -> None:
    groups = report_json(
        capsys, str(tagged_sweep), "--group-by", "stage", "--metrics", "cpu_efficiency", "--sort", "cpu_efficiency"
    )
    assert [(g["stage"], g["n"], g["cpu_efficiency_n"]) for g in groups] == [("tested", 2, 2), ("draft", 2, 2)]
    assert [g["cpu_efficiency_mean"] for g in groups] == pytest.approx([0.7, 0.5])


def test_cpu_efficiency_is_a_recording_metric_and_a_measurement(tagged_sweep: Path) -> None:
    rows = review.load_rows(tagged_sweep)
    assert review.default_metrics(rows) == ["slept_s"]  # the experiment's own, as resources_* are not
    assert not review.is_own_metric("cpu_efficiency")
    assert is_measured("cpu_efficiency")  # reproduce: informational unless --rtol


def test_every_job_of_many_sweeps_filters_and_sorts_on_tags(
    tagged_sweep: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tagged_sweep.parents[1]
    rows = report_json(capsys, str(root), "--jobs", "--where", "stage=draft", "--sort", "cpu_efficiency")
    assert [(row["job"], row["stage"], row["cpu_efficiency"]) for row in rows] == [
        ("2", "draft", 0.7),
        ("3", "draft", 0.3),
    ]


def test_compare_by_a_tag(tagged_sweep: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["compare", str(tagged_sweep), str(tagged_sweep), "--by", "stage", "--metrics", "slept_s", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["by"] == ["stage"]
    assert sorted(row["params"]["stage"] for row in result["rows"]) == ["draft", "tested"]


def test_validate_selects_jobs_by_a_tag(tagged_sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("where: {stage: tested}\nranges: {cpu_efficiency: {min: 0.5}}\n", encoding="utf-8")
    assert main(["validate", str(tagged_sweep), "--rules", str(rules), "--json"]) == 0
    outcome = json.loads(capsys.readouterr().out)
    assert [job["job"] for job in outcome["jobs"]] == ["0", "1"]


def test_a_job_without_a_record_has_the_tags_its_overrides_set(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    (sweep_dir / "0" / ".hydra").mkdir(parents=True)  # started, no job.json yet
    (sweep_dir / "0" / ".hydra" / "overrides.yaml").write_text("- seed=0\n- +tags.stage=tested\n", encoding="utf-8")
    plan = {"jobs": [{"num": 0, "job_dir": "0"}, {"num": 1, "job_dir": "1", "overrides": ["+tags.stage=draft"]}]}
    records.write_json_atomic(sweep_dir / sweepdir.PLAN_FILE, plan)
    views = sweepdir.SweepReader(sweep_dir).jobs(sweep_dir, plan, live=True)
    assert [(v.status, v.tags) for v in views] == [("running", {"stage": "tested"}), ("pending", {"stage": "draft"})]


def test_the_strict_reader_raises_on_a_damaged_record_the_other_shows_it_running(tmp_path: Path) -> None:
    (tmp_path / "0").mkdir()
    (tmp_path / "0" / records.JOB_FILE).write_text("{", encoding="utf-8")
    assert sweepdir.SweepReader(tmp_path).record(tmp_path / "0") is None
    with pytest.raises(RecordError):
        sweepdir.SweepReader(tmp_path, strict=True).record(tmp_path / "0")
