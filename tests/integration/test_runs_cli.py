"""``explaunch runs`` and the Python API over the MLflow store a real sweep wrote (the session's literal sweep)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import explaunch
from explaunch.cli import main
from explaunch.errors import ExplaunchError
from explaunch.sweepdir import records
from tests.integration.conftest import Sweep
from tests.integration.helpers import run_main

pytestmark = pytest.mark.slow


def job_runs(sweep: Sweep) -> dict[str, records.JobRecord]:
    """run id -> the job record that names it."""
    return {r.tracking["run_id"]: r for _, r in records.iter_job_records(sweep.dir)}


def cli_json(capsys: pytest.CaptureFixture[str], *argv: str) -> object:
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_runs_list_counts_the_sweeps_runs(literal_sweep: Sweep, capsys: pytest.CaptureFixture[str]) -> None:
    experiments = cli_json(capsys, "runs", "list", "--tracking-uri", literal_sweep.store)
    assert isinstance(experiments, list)
    counts = {e["name"]: e["runs"] for e in experiments}
    assert counts["explaunch"] == 7  # 6 jobs and the sweep's own run


@pytest.mark.parametrize(("metric", "mode"), [("throughput_e2e_tokens_per_s", "max"), ("latency_batch_p50_s", "min")])
def test_runs_best_returns_the_run_with_the_true_extreme(
    literal_sweep: Sweep, capsys: pytest.CaptureFixture[str], metric: str, mode: str
) -> None:
    runs = job_runs(literal_sweep)
    pick = max if mode == "max" else min
    expected = pick(runs, key=lambda run_id: runs[run_id].metrics[metric])
    best = cli_json(
        capsys, "runs", "best", "explaunch", "--metric", metric, "--mode", mode, "--tracking-uri", literal_sweep.store
    )
    assert isinstance(best, dict)
    assert best["run_id"] == expected
    assert best["metrics"][metric] == runs[expected].metrics[metric]


def test_get_best_run_python_api_reads_the_default_store(literal_sweep: Sweep, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = job_runs(literal_sweep)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(literal_sweep.cwd)  # the default store: ./mlflow.db
    best = explaunch.get_best_run("explaunch", "tokens_per_joule")
    assert best.run_id == max(runs, key=lambda run_id: runs[run_id].metrics["tokens_per_joule"])
    assert best.params["batch"] == str(runs[best.run_id].config["batch"])
    assert best.tags["status"] == "COMPLETED" and best.artifact_uri.endswith("/artifacts")


def test_runs_compare_marks_the_differing_params(literal_sweep: Sweep, capsys: pytest.CaptureFixture[str]) -> None:
    jobs = {(r.config["model"]["name"], r.config["batch"]): d for d, r in records.iter_job_records(literal_sweep.dir)}
    a, b = jobs[("llama", 8)], jobs[("llama", 16)]
    assert main(["runs", "compare", str(a), str(b), "--tracking-uri", literal_sweep.store]) == 0
    lines = capsys.readouterr().out.splitlines()
    marked = {line.split()[2] for line in lines if line.startswith("*  param")}
    assert marked == {"batch", "batching.batch_size"}
    assert not any(line.split()[2:3] == ["model.name"] for line in lines)  # equal params are hidden by default
    assert any(line.startswith("*  metric") and line.split()[2] == "num_batches" for line in lines)

    data = cli_json(capsys, "runs", "compare", str(a), str(b), "--tracking-uri", literal_sweep.store)
    assert isinstance(data, dict)
    params = {v["key"]: v for v in data["values"] if v["section"] == "param"}
    assert params["model.name"]["differs"] is False and params["model.name"]["a"] == "llama"
    assert (params["batch"]["a"], params["batch"]["b"], params["batch"]["differs"]) == ("8", "16", True)


def test_runs_search_applies_an_mlflow_filter(literal_sweep: Sweep, capsys: pytest.CaptureFixture[str]) -> None:
    store = ("--tracking-uri", literal_sweep.store)
    found = cli_json(capsys, "runs", "search", "explaunch", "--filter", "params.batch = '8'", *store)
    assert isinstance(found, list)
    assert sorted(r["params"]["model.name"] for r in found) == ["llama", "mistral"]
    assert cli_json(capsys, "runs", "search", "explaunch", "--filter", "tags.status = 'FAILED'", *store) == []
    shown = cli_json(capsys, "runs", "show", "explaunch", "--limit", "3", *store)
    assert isinstance(shown, list) and len(shown) == 3


def test_runs_download_copies_the_runs_artifacts(
    literal_sweep: Sweep, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job_dir, record = next(records.iter_job_records(literal_sweep.dir))
    dest = tmp_path / "dl"
    main(["runs", "download", record.tracking["run_id"], "--dest", str(dest), "--tracking-uri", literal_sweep.store])
    assert json.loads((dest / "job.json").read_text()) == json.loads((job_dir / "job.json").read_text())
    assert (dest / ".hydra" / "overrides.yaml").is_file()


def test_runs_bad_input_is_one_error_line(
    literal_sweep: Sweep, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = ("--tracking-uri", literal_sweep.store)
    assert main(["runs", "show", "nope", *store]) == 1
    assert (
        capsys.readouterr().err
        == f"error: experiment 'nope': no such experiment in {literal_sweep.store}; there: Default, explaunch\n"
    )
    assert main(["runs", "best", "explaunch", "--metric", "accuracy", *store]) == 1
    assert capsys.readouterr().err.startswith(
        "error: metric=accuracy: no finished run of experiment 'explaunch' has it"
    )
    assert main(["runs", "search", "explaunch", "--filter", "tags.status = FAILED", *store]) == 1
    assert capsys.readouterr().err.startswith(
        "error: filter 'tags.status = FAILED': Parameter value is either not quoted"
    )
    missing = tmp_path / "none.db"
    assert main(["runs", "list", "--tracking-uri", f"sqlite:///{missing}"]) == 1
    assert capsys.readouterr().err.startswith(f"error: no MLflow store at {missing}")
    assert not missing.exists()  # no empty store was created


def test_load_model_says_an_llm_run_has_none(literal_sweep: Sweep) -> None:
    run = explaunch.get_best_run("explaunch", "throughput_e2e_tokens_per_s", tracking_uri=literal_sweep.store)
    with pytest.raises(ExplaunchError, match=f"run {run.run_id} has no logged model"):
        explaunch.load_model(run)


def test_load_model_loads_the_yolo_model_of_the_best_run(tmp_path: Path) -> None:
    proc = run_main("experiment_type=yolo_train", f"hydra.run.dir={tmp_path / 'job'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    best = explaunch.get_best_run("explaunch", "mAP50", tracking_uri=store)
    assert best.run_id == records.read_job_record(tmp_path / "job").tracking["run_id"]
    model = explaunch.load_model(best)
    assert type(model).__name__ == "YOLO" and model.names == {0: "square", 1: "disc"}


def test_runs_search_by_tag_finds_the_runs_of_a_tagged_sweep(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``+tags.stage=tested``: a tag of every job's run (logged by the sweep's relay) and a field of its job.json;
    ``explaunch runs search --tag stage=tested`` finds them, in any experiment."""
    sweep_dir = tmp_path / "sweep"
    args = ("-m", "experiment_type=probe", "seed=0,1", "+tags.stage=tested", "hydra.launcher.n_jobs=2")
    proc = run_main(*args, f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    untagged = run_main("-m", "experiment_type=probe", "seed=2", f"hydra.sweep.dir={tmp_path / 'other'}", cwd=tmp_path)
    assert untagged.returncode == 0, untagged.stderr[-3000:]
    jobs = {r.tracking["run_id"]: r for _, r in records.iter_job_records(sweep_dir)}
    assert [r.tags for r in jobs.values()] == [{"stage": "tested"}] * 2
    for record in jobs.values():  # a probe sleeps: it uses a small share of the CPU it was given
        assert 0 <= record.metrics["cpu_efficiency"] < 0.9
        assert record.resources["efficiency"]["cpus_allocated"] > 0
    mean = records.read_sweep_record(sweep_dir).mean_cpu_efficiency
    assert mean == pytest.approx(sum(r.metrics["cpu_efficiency"] for r in jobs.values()) / 2)

    store = ("--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}")
    found = cli_json(capsys, "runs", "search", "--tag", "stage=tested", *store)
    assert isinstance(found, list)
    assert sorted(r["run_id"] for r in found) == sorted(jobs)
    assert all(r["tags"]["stage"] == "tested" and r["tags"]["status"] == "COMPLETED" for r in found)
    both = cli_json(
        capsys, "runs", "search", "explaunch", "--tag", "stage=tested", "--filter", "params.seed = '1'", *store
    )
    assert isinstance(both, list) and [r["params"]["seed"] for r in both] == ["1"]
    assert cli_json(capsys, "runs", "search", "--tag", "stage=tested", "--tag", "team=x", *store) == []
    assert main(["runs", "search", "--tag", "stage", *store]) == 2
    assert capsys.readouterr().err == "error: --tag stage: give KEY=VALUE, e.g. --tag stage=tested\n"
