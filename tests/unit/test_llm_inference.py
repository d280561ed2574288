from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from explaunch.config import validate
from explaunch.errors import ConfigError
from explaunch.experiments import llm_inference, llm_loading, llm_window
from explaunch.experiments.base import ExperimentResult
from explaunch.experiments.llm_figures import energy_metrics
from explaunch.job.seeding import seed_everything
from explaunch.measure.compute import generate_flops
from explaunch.measure.energy import EnergyTracker, combine
from explaunch.sweepdir.records import COMPLETED, JobRecord, energy_quality
from tests.conftest import compose_config

pytestmark = pytest.mark.extras  # llm_inference needs torch and transformers

SMALL = (
    "batching.num_prompts=12",
    "batching.max_new_tokens=6",
    "batching.warmup_batches=1",
    "energy.enabled=false",
    "energy.min_window_s=0.01",
    "energy.min_iterations=1",
    "hardware=cpu",
)


def run_job(tmp_path: Path, *overrides: str) -> ExperimentResult:
    config = validate(compose_config(*SMALL, *overrides))
    seed_everything(config.seed)
    return llm_inference.run(config, tmp_path)


def read_iterations(job_dir: Path, result: ExperimentResult) -> list[dict[str, float]]:
    """The window's calls as the job wrote them (iterations.csv, named in the record), numbers as numbers."""
    assert "iterations" not in result.info  # kept out of job.json
    with (job_dir / result.info["iterations_file"]).open() as f:
        return [
            {k: (int if k in ("batch", "output_tokens") else float)(v) for k, v in row.items()}
            for row in csv.DictReader(f)
        ]


@pytest.mark.parametrize("model", ["llama", "mistral"])
def test_metrics_are_positive_and_consistent(tmp_path: Path, model: str) -> None:
    result = run_job(tmp_path, f"model={model}", "batch=5")
    m = result.metrics
    assert m["num_batches"] == 3  # 12 prompts in batches of 5: 5, 5, 2
    assert m["output_tokens"] == 12 * 6  # fixed-length generation
    assert m["input_tokens"] >= 12 * 4  # every prompt passed the >= 4 token filter
    assert m["throughput_e2e_tokens_per_s"] == pytest.approx(m["window_output_tokens"] / m["generate_time_s"])
    iterations = read_iterations(tmp_path, result)
    assert sum(i["latency_s"] for i in iterations) == pytest.approx(m["generate_time_s"])
    assert 0 < m["ttft_p50_s"] <= m["latency_batch_p50_s"]
    assert m["latency_batch_p50_s"] <= m["latency_batch_p95_s"]
    assert m["prefill_time_s"] + m["decode_time_s"] == pytest.approx(m["generate_time_s"])
    assert m["throughput_decode_tokens_per_s"] == pytest.approx(
        (m["window_output_tokens"] - m["window_queries"]) / m["decode_time_s"]
    )
    assert m["throughput_decode_tokens_per_s"] > m["throughput_e2e_tokens_per_s"]  # the prefill is left out
    assert m["memory_peak_rss_mib"] > 0
    assert m["flops"] > 0 and m["flops_per_output_token"] == pytest.approx(m["flops"] / m["output_tokens"])
    assert result.info["weights"] == "random-init"
    assert result.info["device"] == "cpu"


def test_the_window_repeats_the_batches_until_it_lasted_long_enough(tmp_path: Path) -> None:
    result = run_job(tmp_path, "batch=5", "energy.min_window_s=0.8", "energy.min_iterations=5")
    m, iterations = result.metrics, read_iterations(tmp_path, result)
    assert m["generate_time_s"] >= 0.8 * 0.9  # the window's calls, less the loop's own moments between them
    assert len(iterations) == m["window_iterations"] >= 5  # more than one pass over the 3 batches
    assert [i["batch"] for i in iterations] == [n % 3 for n in range(len(iterations))]
    assert m["output_tokens"] == 12 * 6  # one pass, whatever the window ran
    assert m["window_output_tokens"] == sum(i["output_tokens"] for i in iterations)
    assert m["window_queries"] == sum((5, 5, 2)[int(i["batch"])] for i in iterations)


def test_a_window_runs_every_batch_and_min_iterations_calls_even_when_time_is_up(tmp_path: Path) -> None:
    m = run_job(tmp_path, "batch=5", "energy.min_iterations=7").metrics
    assert m["window_iterations"] == 7
    m = run_job(tmp_path, "batch=5", "energy.min_iterations=1").metrics
    assert m["window_iterations"] == 3


def test_energy_window_prefill_decode_and_saved_outputs(tmp_path: Path) -> None:
    result = run_job(
        tmp_path,
        "batch=6",
        "energy.enabled=true",
        "energy.min_window_s=1.0",
        "energy.prefill_window_s=0.5",
        "experiment_type.save_outputs=true",
    )
    m, energy = result.metrics, result.info["energy"]
    assert energy["window_s"] >= 1.0 and m["energy_window_s"] == energy["window_s"]
    assert energy["quality"] == "low" and energy["quality_reasons"][0].startswith("generate window: window ")  # < 5 s
    assert energy["quality_by_window"]["prefill"] == {k: energy["prefill"][k] for k in ("quality", "quality_reasons")}
    assert {"cpu", "ram"} <= set(energy["components"])
    joules = m["energy_joules"]
    assert m["energy_per_output_token_j"] == pytest.approx(joules / m["window_output_tokens"])
    assert m["energy_per_query_j"] == pytest.approx(joules / m["window_queries"])
    assert m["queries_per_kwh"] == pytest.approx(m["window_queries"] / (joules / 3.6e6))
    assert m["tokens_per_joule"] == pytest.approx(1 / m["energy_per_output_token_j"])
    assert m["flops_per_joule"] > 0
    assert energy["prefill"]["window_s"] >= 0.5 and m["prefill_energy_per_query_j"] > 0
    assert m["decode_energy_joules"] == pytest.approx(joules - m["prefill_energy_per_query_j"] * m["window_queries"])
    lines = (tmp_path / "outputs.jsonl").read_text().splitlines()
    assert len(lines) == 12
    first = json.loads(lines[0])
    assert len(first["output_token_ids"]) == 6 and isinstance(first["output"], str) and first["prompt"]


def measured_window(window_s: float, samples_interval_s: float, tokens: int) -> llm_window.Window:
    """A window as run_window leaves it: its calls, and a tracker holding the reading the sidecar would give for a
    window with no counter here (codecarbon's models only, ``samples_interval_s`` apart)."""
    figures = {
        "version": "3.3.2",
        "cpu_mode": "cpu_load",
        "country": "USA",
        "interval_s": samples_interval_s,
        "duration_s": window_s,
        "energy_kwh": 2e-5 * window_s,
        "cpu_kwh": 1e-5 * window_s,
        "ram_kwh": 1e-5 * window_s,
        "emissions_kg": 1e-6,
    }
    tracker = EnergyTracker()
    tracker.reading = combine(window_s, {}, {"cpu": "no RAPL", "ram": "no RAPL"}, figures)
    timing = llm_window.BatchTiming(0.5, 0.1, input_tokens=40, output_tokens=tokens, prompt_len=10, new_tokens=6)
    calls = round(window_s / 0.5)
    return llm_window.Window([timing] * calls, [0] * calls, [], tracker, window_s, queries=4 * calls)


def test_figures_from_a_low_quality_prefill_window_make_the_headline_quality_low() -> None:
    """As a real job on this machine: a 10 s generate window is ok, a prefill window of 6 modelled samples is not,
    and the prefill and decode figures come from it: the record's headline quality says so, naming the window."""
    window = measured_window(10.0, 0.5, tokens=24)  # 21 samples
    prefill = measured_window(5.0, 1.0, tokens=4)  # 6 samples
    assert window.energy is not None and window.energy.reading is not None and window.energy.reading.quality == "ok"
    metrics = {"window_output_tokens": 480.0, "window_queries": 80.0}
    energy = energy_metrics(window, prefill, None, metrics)
    assert "decode_energy_per_token_j" in metrics  # a figure computed from the prefill window's reading
    assert energy["quality"] == "low"
    assert energy["quality_reasons"] == [
        "prefill window: cpu: 6 modelled samples < 10",
        "prefill window: ram: 6 modelled samples < 10",
    ]
    assert energy["quality_by_window"]["generate"] == {"quality": "ok", "quality_reasons": []}
    assert energy["prefill"]["quality"] == "low"  # each window keeps its own
    record = JobRecord(
        status=COMPLETED,
        overrides=[],
        config={},
        config_hash="x",
        start_time="2025-03-01T00:00:00+00:00",
        end_time="2025-03-01T00:00:30+00:00",
        duration_s=30.0,
        job_num=0,
        metrics=metrics,
        info={"energy": energy},
    )
    assert energy_quality(record) == ("low", energy["quality_reasons"])  # what explaunch report shows
    alone = energy_metrics(window, None, None, dict(metrics))  # no prefill figures reported: the window's own
    assert (alone["quality"], alone["quality_reasons"]) == ("ok", [])


def test_flop_counter_and_analytical_count_agree_exactly(tmp_path: Path) -> None:
    """The analytical formula models what generate executes: prefill, LM head on the last token, KV-cached steps."""
    for model in ("llama", "mistral"):
        m = run_job(tmp_path, f"model={model}", "batch=4").metrics
        assert m["flops"] == pytest.approx(m["flops_analytical"], rel=1e-9)


def test_same_seed_gives_the_same_tokens_and_another_seed_does_not(tmp_path: Path) -> None:
    first = run_job(tmp_path, "seed=7").info["output_sha256"]
    again = run_job(tmp_path, "seed=7").info["output_sha256"]
    other = run_job(tmp_path, "seed=8").info["output_sha256"]
    assert first == again
    assert first != other


def test_prompt_length_filter_is_applied(tmp_path: Path) -> None:
    tokenizer = llm_loading.load_tokenizer(validate(compose_config()).model)
    config = validate(compose_config("batching.min_prompt_tokens=60", "batching.max_prompt_tokens=80"))
    texts = llm_loading.load_prompts(llm_loading.shipped_data("prompts.jsonl"))
    chosen = llm_loading.select_prompts(texts, tokenizer, config.batching, seed=0)
    lengths = [len(tokenizer(t)["input_ids"]) for t in chosen]
    assert len(chosen) == config.batching.num_prompts
    assert all(60 <= n <= 80 for n in lengths)


def test_too_few_prompts_after_the_filter_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^batching\.num_prompts=12: only \d+ of 240 prompts have 250\.\.256 tokens"):
        run_job(tmp_path, "batching.min_prompt_tokens=250")


def test_prompts_file_from_the_user_is_used(tmp_path: Path) -> None:
    prompts = tmp_path / "mine.jsonl"
    prompts.write_text("\n".join(f'{{"text": "tell me about the number {i} in detail"}}' for i in range(12)))
    result = run_job(tmp_path, f"experiment_type.prompts_file={prompts}")
    assert result.info["prompts_file"] == str(prompts)


def test_early_eos_is_counted_up_to_and_including_it() -> None:
    ids = torch.tensor([[5, 6, 2, 0], [5, 6, 7, 8]])
    assert llm_window.count_output_tokens(ids, eos_token_id=2, fixed_length=False) == 3 + 4
    assert llm_window.count_output_tokens(ids, eos_token_id=2, fixed_length=True) == 8


def test_analytical_flops_of_a_single_forward_step() -> None:
    # prompt of 1 token, 1 new token: one forward pass of 1 token over a context of 1
    flops = generate_flops(
        layer_params=100, head_params=10, num_layers=2, hidden_size=8, batch=3, prompt_len=1, new_tokens=1
    )
    assert flops == 3 * (2 * 100 + 2 * 10 + 4 * 2 * 8 * 1)


def test_cuda_request_without_a_gpu_is_a_clear_error(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    with pytest.raises(ConfigError, match=r"^hardware\.device=cuda: no CUDA device is visible here"):
        run_job(tmp_path, "hardware=gpu", "hardware.mixed_precision=no")
