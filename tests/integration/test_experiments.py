"""Experiment types beyond LLM inference, run as users run them."""

from __future__ import annotations

import shutil
import statistics
from itertools import pairwise
from pathlib import Path

import mlflow
import pytest

from explaunch.sweepdir import records
from tests.integration.helpers import run_main

pytestmark = pytest.mark.slow


def test_fairness_grid_shows_the_accuracy_fairness_trade_off(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = run_main(
        "-m", "+experiment=fairness_grid", "energy.min_window_s=1", f"hydra.sweep.dir={sweep}", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = [r for _, r in records.iter_job_records(sweep)]
    assert len(found) == 15 and {r.status for r in found} == {"completed"}
    by_lam: dict[float, list[records.JobRecord]] = {}
    for record in found:
        by_lam.setdefault(record.config["lam"], []).append(record)
    lams = sorted(by_lam)
    assert lams == [0.0, 0.1, 0.2, 0.5, 1.0] and all(len(by_lam[lam]) == 3 for lam in lams)

    def mean(lam: float, metric: str) -> float:
        return statistics.mean(r.metrics[metric] for r in by_lam[lam])

    gaps = [mean(lam, "demographic_parity_difference") for lam in lams]
    accuracy = [mean(lam, "accuracy") for lam in lams]
    assert all(later < earlier for earlier, later in pairwise(gaps))  # the gap shrinks
    assert gaps[-1] < gaps[0] / 2
    assert all(later <= earlier + 0.002 for earlier, later in pairwise(accuracy))
    assert accuracy[-1] < accuracy[0] - 0.01  # and accuracy pays for it
    record = by_lam[0.0][0]
    for metric in ("balanced_accuracy", "equalized_odds_difference", "accuracy_group0", "accuracy_group1",
                   "train_time_s", "energy_joules"):  # fmt: skip
        assert metric in record.metrics, metric


def test_legacy_script_job_collects_its_outputs_and_logs_its_metrics(tmp_path: Path) -> None:
    proc = run_main("+experiment=legacy_regressor", f"hydra.run.dir={tmp_path / 'job'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = records.read_job_record(tmp_path / "job")
    assert record.status == "completed"
    assert record.metrics["epochs"] == 50 and record.metrics["final_loss"] > 0  # from metrics.json
    assert record.metrics["epoch"] == 40  # from the printed key=value lines (the last one)
    assert record.info["artifacts"] == ["artifacts/metrics.json", "artifacts/model.pt"]
    assert "final_loss=" in (tmp_path / "job" / "stdout.txt").read_text()
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert run.data.metrics["final_loss"] == pytest.approx(record.metrics["final_loss"])
    assert {a.path for a in client.list_artifacts(run.info.run_id, "artifacts")} == {
        "artifacts/metrics.json",
        "artifacts/model.pt",
    }


def test_a_script_that_exits_3_is_a_failed_job_with_its_stderr_kept(tmp_path: Path) -> None:
    proc = run_main(
        "+experiment=legacy_regressor", "experiment_type.args=[--fail]", "tracking=none",
        f"hydra.run.dir={tmp_path / 'job'}", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode != 0
    record = records.read_job_record(tmp_path / "job")
    assert record.status == "failed" and record.error is not None
    assert record.error.type == "ScriptFailed" and record.error.message.startswith("exit code 3: error: asked to fail")
    assert (tmp_path / "job" / "stderr.txt").read_text() == "error: asked to fail (--fail)\n"


def test_a_shell_script_swept_on_joblib(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = run_main("-m", "+experiment=legacy_words", "tracking=none", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    words = {r.config["params"]["min_length"]: r.metrics["words"] for _, r in records.iter_job_records(sweep)}
    assert sorted(words) == [3, 5, 7] and words[3] > words[5] > words[7] > 0
    assert (sweep / "0" / "artifacts" / "words.csv").is_file()


def test_ddp_llm_job_runs_two_processes_and_aggregates_them(tmp_path: Path) -> None:
    """In a joblib sweep (the job runs in a loky worker, which its processes must not depend on)."""
    proc = run_main(
        "-m", "sharding=ddp", "sharding.num_processes=2", "batching.num_prompts=16", "batching.max_new_tokens=8",
        "batching.warmup_batches=1", "batch=4", "tracking=none", f"hydra.sweep.dir={tmp_path}",
        "hydra.sweep.subdir=job", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = records.read_job_record(tmp_path / "job")
    assert record.status == "completed" and record.metrics["num_processes"] == 2
    processes = record.info["processes"]
    assert [p["rank"] for p in processes] == [0, 1] and len({p["pid"] for p in processes}) == 2
    assert [p["output_tokens"] for p in processes] == [64, 64]  # 8 prompts each, 8 tokens each
    assert record.metrics["output_tokens"] == 128 == processes[0]["group_output_tokens"]  # all_reduce agreed
    slowest = max(p["generate_time_s"] for p in processes)
    window_tokens = record.metrics["window_output_tokens"]  # the window repeats the batches: 128 tokens a pass
    assert record.metrics["throughput_e2e_tokens_per_s"] == pytest.approx(window_tokens / slowest)
    assert record.metrics["energy_joules"] > 0 and record.metrics["memory_peak_rss_mib"] == max(
        p["memory_peak_rss_mib"] for p in processes
    )
    assert sorted(p.name for p in (tmp_path / "job" / "ranks").glob("rank-*.json")) == ["rank-0.json", "rank-1.json"]
    assert record.info["launch"] == "spawn"


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="uses the absence of a GPU to make processes fail")
def test_a_process_that_fails_fails_the_job_with_its_error_and_stops_the_others(tmp_path: Path) -> None:
    proc = run_main(
        "sharding=ddp",
        "hardware.device=cuda",
        "tracking=none",
        f"hydra.run.dir={tmp_path / 'job'}",
        cwd=tmp_path,
        timeout=300,
    )  # fmt: skip  (no GPU here: every process stops at its device)
    assert proc.returncode == 1
    record = records.read_job_record(tmp_path / "job")
    assert record.status == "failed" and record.error is not None
    assert "exited with code 1" in record.error.message and "no CUDA device is visible" in record.error.message
    assert "no CUDA device" in (tmp_path / "job" / "ranks" / "rank-0.log").read_text()


def test_sharded_jobs_run_as_scheduler_tasks_and_fsdp_shards_the_weights(tmp_path: Path) -> None:
    """On submitit (local here, SLURM in tests/slurm) a 2-process job is a job of 2 tasks; one sweep mixes
    strategies, and each job gets its own task count. FSDP generates what DDP does, holding half the weights."""
    sweep = tmp_path / "sweep"
    proc = run_main(
        "-m", "hydra/launcher=submitit_local", "sharding=none,ddp,fsdp", "hardware=cpu", "batching.num_prompts=16",
        "batching.max_new_tokens=8", "batching.warmup_batches=1", "batch=4", "tracking=none",
        f"hydra.sweep.dir={sweep}", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    by_strategy = {r.config["sharding"]["strategy"]: r for _, r in records.iter_job_records(sweep)}
    assert {r.status for r in by_strategy.values()} == {"completed"}
    # each task leaves its log (its result pickle is removed once the sweep has it: it holds the config)
    tasks = {d.name: list(d.glob("*_log.out")) for d in (sweep / ".submitit").iterdir() if d.name.isdigit()}
    assert sorted(len(logs) for logs in tasks.values()) == [1, 2, 2]  # none: 1 task; ddp, fsdp: 2 each
    assert not list((sweep / ".submitit").rglob("*.pkl"))
    ddp, fsdp = by_strategy["ddp"], by_strategy["fsdp"]
    for record in (ddp, fsdp):
        assert record.info["launch"].startswith("tasks of local job")
        assert len({p["pid"] for p in record.info["processes"]}) == 2
    assert [p["output_sha256"] for p in fsdp.info["processes"]] == [p["output_sha256"] for p in ddp.info["processes"]]
    total = fsdp.metrics["model_parameters"]
    assert ddp.metrics["model_parameters_per_process_max"] == total
    assert fsdp.metrics["model_parameters_per_process_max"] <= total / 2 + 64  # each keeps half (dim-0 shards)

    offload = run_main(
        "sharding=fsdp", "sharding.cpu_offload=true", "hardware=cpu", "batching.num_prompts=16",
        "batching.max_new_tokens=8", "batching.warmup_batches=1", "batch=4", "tracking=none",
        f"hydra.run.dir={tmp_path / 'offload'}", cwd=tmp_path,
    )  # fmt: skip
    assert offload.returncode == 0, offload.stderr[-3000:]
    spawned = records.read_job_record(tmp_path / "offload")
    assert spawned.info["launch"] == "spawn" and spawned.config["sharding"]["cpu_offload"] is True
    assert [p["output_sha256"] for p in spawned.info["processes"]] == [
        p["output_sha256"] for p in ddp.info["processes"]
    ]
