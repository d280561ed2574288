"""B3: tokens/s of the LLM job as explaunch records it, over a raw ``model.generate`` loop on the same model, prompts
and batches, alternated in one process: rounds 2k and 2k+1 run in opposite orders (ABBA) and the ratio is taken per
block of two rounds (``harness.abba_ratios``), so that a drift over the block cancels.

The raw loop is what a user would write: build the model with explaunch's own helpers (same seed, so the same random
weights), tokenize the same prompts into the same batches, warm up as many batches, then time each ``generate`` with
``time.perf_counter`` and divide the new tokens by the summed time. The explaunch side is ``llm_inference.measure``
(its step clock, its windows' energy trackers) with the job-level monitors a job runs beside it (resource sampler,
whole-job energy tracker, which reads the GPUs' counters too). Both must produce the same tokens (``output_sha256``):
the same work. A real ``python main.py`` job with the same overrides runs once more, and its ``job.json`` figure is
shown beside (another process: for information only).

Sizes: hidden 256, batch 8, 64 prompts, 32 new tokens: a batch takes about 75-105 ms here, far above timer noise.
Each measured window is one pass over the prompts, as the raw loop's (a job's default window repeats them for 10 s:
its length is not what B3 compares).

    python -m benchmarks.b3_llm_throughput --worker --rounds 32    # the in-process part alone, prints JSON
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    MAIN,
    ROOT,
    BenchResult,
    Context,
    Row,
    Spread,
    Target,
    abba_ratios,
    run_json_worker,
    timed_run,
)

ID = "B3"
TITLE = "LLM tokens/s as recorded / raw generate loop, same process"
TARGET = Target(">=", 0.97)
OVERRIDES = (
    "model.hidden_size=256",
    "batch=8",
    "batching.num_prompts=64",
    "batching.max_new_tokens=32",
    "batching.warmup_batches=3",
    "experiment_type.flops=none",  # an untimed pass: it changes no timed figure, only the run's length
    "energy.min_window_s=0.001",  # one pass over the prompts per window, as the raw loop
    "energy.min_iterations=1",
    "energy.prefill_window_s=0.001",
)


# ---- the in-process worker (torch is imported only here) --------------------------------------------------------
def _config() -> Any:
    from hydra import compose, initialize_config_dir

    from explaunch.config import register_configs, validate

    register_configs(ROOT)
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return validate(compose("config", overrides=list(OVERRIDES)))


def raw_loop(config: Any, device: Any) -> tuple[float, str, list[float]]:
    """tokens/s, output digest and batch latencies of a plain loop over ``model.generate``."""
    import torch

    from explaunch.experiments import llm_loading as llm
    from explaunch.experiments.llm_window import generate_kwargs
    from explaunch.job.seeding import seed_everything

    seed_everything(config.seed, deterministic=config.deterministic)
    tokenizer = llm.load_tokenizer(config.model)
    model = llm.build_model(config.model, tokenizer, device, llm.resolve_dtype(config.hardware))
    prompts = llm.select_prompts(
        llm.load_prompts(llm.shipped_data("prompts.jsonl")), tokenizer, config.batching, config.seed
    )
    size = config.batching.batch_size
    batches = [
        tokenizer(prompts[i : i + size], return_tensors="pt", padding=True).to(device)
        for i in range(0, len(prompts), size)
    ]
    kwargs = generate_kwargs(config.batching, tokenizer)
    digest = hashlib.sha256()
    tokens, latencies = 0, []
    with torch.inference_mode():
        for i in range(config.batching.warmup_batches):
            model.generate(**batches[i % len(batches)], **kwargs)
        for batch in batches:
            start = time.perf_counter()
            out = model.generate(**batch, **kwargs)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            latencies.append(time.perf_counter() - start)
            new_ids = out[:, batch["input_ids"].shape[1] :]
            tokens += new_ids.numel()  # fixed_length: every row generates max_new_tokens
            digest.update(new_ids.cpu().numpy().astype("int64").tobytes())
    return tokens / sum(latencies), digest.hexdigest(), latencies


def explaunch_job(config: Any, device: Any, job_dir: Path) -> tuple[float, str, list[float]]:
    """tokens/s as the job records it: ``measure`` with the job-level monitors running beside it."""
    from dataclasses import asdict

    from explaunch.experiments.llm_inference import measure
    from explaunch.job.seeding import seed_everything
    from explaunch.measure.energy import EnergyTracker, job_gpus
    from explaunch.measure.resources import AlertThresholds, ResourceSampler

    seed_everything(config.seed, deterministic=config.deterministic)
    alerts = AlertThresholds(**asdict(config.resources.alerts))
    sampler = ResourceSampler(job_dir / "resources.csv", config.resources.interval_s, alerts).start()
    gpus = job_gpus(config.hardware.device, list(config.hardware.gpu_ids))
    energy = EnergyTracker.from_config(config.energy, gpus, csv_path=job_dir / "emissions.csv", await_start=False)
    energy.__enter__()
    try:
        result = measure(config, device)
    finally:
        energy.__exit__(None, None, None)
        sampler.stop()
    latencies = [float(i["latency_s"]) for i in result.info["iterations"]]
    return result.metrics["throughput_e2e_tokens_per_s"], result.info["output_sha256"], latencies


def worker(rounds: int) -> dict[str, Any]:
    import torch

    from explaunch.experiments.llm_inference import DEFAULT_THREADS
    from explaunch.experiments.llm_loading import resolve_device

    config = _config()
    torch.set_num_threads(config.hardware.num_threads or DEFAULT_THREADS)
    device = resolve_device(config.hardware)
    out: dict[str, Any] = {"raw": [], "explaunch": [], "digests": set(), "latencies": {"raw": [], "explaunch": []}}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(rounds):
            order = ("raw", "explaunch") if i % 2 == 0 else ("explaunch", "raw")  # ABBA: drift cancels
            for name in order:
                if name == "raw":
                    tps, digest, latencies = raw_loop(config, device)
                else:
                    tps, digest, latencies = explaunch_job(config, device, Path(tmp))
                out[name].append(tps)
                out["digests"].add(digest)
                out["latencies"][name].append(latencies)
    out["same_outputs"] = len(out.pop("digests")) == 1
    out["device"] = str(device)
    out["threads"] = torch.get_num_threads()
    return out


# ---- the suite's side ---------------------------------------------------------------------------------------------
def recorded_by_job(workdir: Path) -> float:
    """throughput_e2e_tokens_per_s from the job.json of a real ``python main.py`` job with the same overrides."""
    cwd = Path(tempfile.mkdtemp(prefix="job-", dir=workdir))
    run_dir = cwd / "run"
    timed_run([sys.executable, str(MAIN), *OVERRIDES, f"hydra.run.dir={run_dir}"], cwd=cwd)
    record = json.loads((run_dir / "job.json").read_text())
    return float(record["metrics"]["throughput_e2e_tokens_per_s"])


def run(ctx: Context) -> BenchResult:
    rounds = max(2, ctx.n(32))  # 16 ABBA blocks
    start = time.perf_counter()
    data = run_json_worker("benchmarks.b3_llm_throughput", ["--worker", "--rounds", str(rounds)])
    if not data["same_outputs"]:
        raise RuntimeError("the raw loop and explaunch generated different tokens: not the same work")
    stats = {name: Spread.of(data[name]) for name in ("raw", "explaunch")}
    ratios = abba_ratios(data["explaunch"], data["raw"])
    raw_median = stats["raw"].median
    job_tps = recorded_by_job(ctx.scratch(ID))
    rows = [
        Row(
            ID,
            "LLM tokens/s recorded / raw loop",
            Spread.of(ratios).median,
            "ratio",
            TARGET,
            min(ratios),
            max(ratios),
            detail=f"{stats['explaunch'].median:.0f} vs {raw_median:.0f} tokens/s, same tokens; "
            f"a real job's job.json: {job_tps:.0f} ({job_tps / raw_median:.3f}, another process)",
        )
    ]
    return BenchResult(
        ID,
        TITLE,
        rows,
        settings={"overrides": list(OVERRIDES), "rounds": rounds, "device": data["device"], "threads": data["threads"]},
        raw={
            "tokens_per_s": {"raw": data["raw"], "explaunch": data["explaunch"]},
            "abba_ratios": ratios,
            "batch_latencies_s": data["latencies"],
            "real_job_tokens_per_s": job_tps,
        },
        stats=stats,
        notes=[(__doc__ or "").split("\n\n", 1)[1].split("\n\n")[0].strip()],
        wall_s=time.perf_counter() - start,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", action="store_true", required=True)
    parser.add_argument("--rounds", type=int, default=32)
    print(json.dumps(worker(parser.parse_args().rounds)))
