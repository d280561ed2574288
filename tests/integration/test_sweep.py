"""The used-by commands, run for real as subprocesses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from explaunch.sweepdir import records
from tests.integration.conftest import SAVE_OUTPUTS, Sweep
from tests.integration.helpers import TINY, run_main

pytestmark = pytest.mark.slow


def test_literal_sweep_leaves_six_completed_job_folders(literal_sweep: Sweep) -> None:
    assert "Joblib.Parallel(n_jobs=2" in literal_sweep.output  # joblib is the default launcher for -m
    assert "A worker stopped" not in literal_sweep.output  # joblib's warning when its workers end (issue 18)
    found = list(records.iter_job_records(literal_sweep.dir))
    assert [r.job_num for _, r in found] == [0, 1, 2, 3, 4, 5]
    assert [d.name for d, _ in found] == ["0", "1", "2", "3", "4", "5"]
    assert all(r.status == records.COMPLETED for _, r in found)
    assert {tuple(r.overrides[:2]) for _, r in found} == {
        (f"model={m}", f"batch={b}") for m in ("llama", "mistral") for b in (8, 16, 32)
    }
    assert all(r.overrides[2:] == [*TINY, SAVE_OUTPUTS] for _, r in found)
    for job_dir, _ in found:
        assert (job_dir / ".hydra" / "config.yaml").is_file()


def test_job_records_hold_the_resolved_config_and_consistent_metrics(literal_sweep: Sweep) -> None:
    for _, record in records.iter_job_records(literal_sweep.dir):
        overrides = dict(o.split("=") for o in record.overrides)
        assert record.config["model"]["name"] == overrides["model"]
        assert record.config["batching"]["batch_size"] == int(overrides["batch"])
        assert record.config_hash and len(record.config_hash) == 16
        m = record.metrics
        assert m["output_tokens"] == 48 * 8
        assert m["num_batches"] == -(-48 // int(overrides["batch"]))
        # speed and energy are those of the window, which ran the batches window_iterations times
        assert m["throughput_e2e_tokens_per_s"] == pytest.approx(m["window_output_tokens"] / m["generate_time_s"])
        assert m["energy_joules"] > 0
        assert m["tokens_per_joule"] == pytest.approx(m["window_output_tokens"] / m["energy_joules"])
        assert m["energy_per_output_token_j"] == pytest.approx(1 / m["tokens_per_joule"])
        assert m["flops"] == pytest.approx(m["flops_analytical"], rel=1e-9)
        assert record.info["energy"]["components"]["ram"]["source"] in ("counter", "modelled")
        assert 0 < record.duration_s < 600
    hashes = {r.config_hash for _, r in records.iter_job_records(literal_sweep.dir)}
    assert len(hashes) == 6


def test_sweep_record_has_one_row_per_job(literal_sweep: Sweep) -> None:
    sweep = records.read_sweep_record(literal_sweep.dir)
    assert sweep.counts == {"completed": 6}
    assert [row.job_dir for row in sweep.jobs] == ["0", "1", "2", "3", "4", "5"]
    assert all(row.metrics["throughput_e2e_tokens_per_s"] > 0 for row in sweep.jobs)
    lines = (literal_sweep.dir / records.SWEEP_CSV).read_text().splitlines()
    assert len(lines) == 7 and lines[0].startswith("job_dir,job_num,overrides,status")


def test_single_job_goes_under_outputs(tmp_path: Path) -> None:
    proc = run_main("model=mistral", "batch=4", "seed=3", "batching.max_new_tokens=16", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    output = proc.stdout + proc.stderr
    assert "run: completed" in output and "job None" not in output, output[-3000:]  # a single run has no number
    jobs = list((tmp_path / "outputs").glob("*/*/job.json"))
    assert len(jobs) == 1
    record = records.read_job_record(jobs[0])
    assert record.status == records.COMPLETED
    assert record.job_num is None
    assert record.config["model"]["name"] == "mistral" and record.config["seed"] == 3
    assert record.config["batching"]["max_new_tokens"] == 16 and record.config["batching"]["batch_size"] == 4
    assert record.metrics["output_tokens"] == 32 * 16
    assert not (tmp_path / "multirun").exists()


def test_failed_job_is_recorded_with_its_error_and_traceback(tmp_path: Path) -> None:
    prompts = tmp_path / "broken.jsonl"
    prompts.write_text('{"text": "fine"}\nnot json at all\n')
    proc = run_main(f"experiment_type.prompts_file={prompts}", f"hydra.run.dir={tmp_path / 'job'}", cwd=tmp_path)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    record = records.read_job_record(tmp_path / "job")
    assert record.status == records.FAILED
    assert record.error is not None and record.error.type == "ConfigError"
    assert "line 2 is not JSON" in record.error.message
    traceback = (tmp_path / "job" / (record.error.traceback_file or "")).read_text()
    assert "Traceback" in traceback and "load_prompts" in traceback
    metrics = json.loads((tmp_path / "job" / "job.json").read_text())["metrics"]
    assert "throughput_e2e_tokens_per_s" not in metrics and metrics["job_energy_joules"] > 0  # what was measured stays
