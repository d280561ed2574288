"""LLM inference: batched ``generate`` over a prompt set, measuring speed, FLOPs, memory and energy.

Protocol (as optimum-benchmark and AIEnergyScore do it): prompts filtered by token length, ``warmup_batches``
unmeasured batches, then a timed window that runs the batches in turn until it lasted ``energy.min_window_s`` (10 s)
and ``energy.min_iterations`` calls, every batch at least once: speed, latency percentiles, energy and peak memory
all come from that window. Token counts, FLOPs and the output hash are those of one pass over the prompts
(deterministic); ``window_*`` counts what the window ran. With energy on, a prefill window first (``generate`` of one
token per prompt) tells the prompt's forward pass from the decoding after it. FLOPs are counted in a separate,
untimed pass so that counting never slows what is timed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from explaunch.config import ExplaunchConfig
from explaunch.experiments.base import ExperimentResult
from explaunch.experiments.llm_figures import (
    count_flops,
    energy_metrics,
    linear_parameters,
    speed_metrics,
    write_iterations,
    write_outputs,
)
from explaunch.experiments.llm_loading import (
    build_model,
    load_prompts,
    load_tokenizer,
    resolve_dtype,
    select_prompts,
    shipped_data,
)
from explaunch.experiments.llm_loading import resolve_device as resolve_device  # sharded imports it from here
from explaunch.experiments.llm_window import generate_kwargs, run_window, timed_generate
from explaunch.measure.compute import generate_flops
from explaunch.measure.energy import job_gpus
from explaunch.measure.memory import PeakMemory

MIB = 1024 * 1024
OUTPUTS_FILE = "outputs.jsonl"
ITERATIONS_FILE = "iterations.csv"  # the window's calls, one row each: kept out of job.json, which readers parse whole
# torch's own choice at import (it honours OMP_NUM_THREADS, which joblib's workers set to cores / workers); a job
# that asked for another count must not leave it to the next job of a reused worker.
DEFAULT_THREADS = torch.get_num_threads()


def run(config: ExplaunchConfig, job_dir: Path) -> ExperimentResult:
    if config.sharding.strategy != "none":
        from explaunch.experiments.sharded import run_sharded

        return run_sharded(config, job_dir)
    torch.set_num_threads(config.hardware.num_threads or DEFAULT_THREADS)
    outputs = job_dir / OUTPUTS_FILE if config.experiment_type.save_outputs else None
    result = measure(config, resolve_device(config.hardware), outputs=outputs)
    iterations = result.info.pop("iterations", None)
    if iterations:
        write_iterations(job_dir / ITERATIONS_FILE, iterations)
        result.info["iterations_file"] = ITERATIONS_FILE
    return result


def measure(
    config: ExplaunchConfig, device: torch.device, rank: int = 0, world: int = 1, outputs: Path | None = None
) -> ExperimentResult:
    """Build the model, take this process's share of the prompts (every ``world``-th from ``rank``), warm up, then
    measure two windows (see :func:`run_window`): prefill only (``generate`` of one token: the prompt's forward
    pass), when energy is on, and the full generation. Decode = full generation minus prefill, as optimum-benchmark
    tells them apart. With several processes, they start each window together (a barrier)."""
    batching = config.batching
    dtype = resolve_dtype(config.hardware)
    tokenizer = load_tokenizer(config.model)
    model = build_model(config.model, tokenizer, device, dtype)
    fsdp = config.sharding.strategy == "fsdp"
    if fsdp:
        from explaunch.experiments.sharded import shard_fsdp

        model = shard_fsdp(model, config, device)
    parameters = float(sum(p.numel() for p in model.parameters()))
    parameters_local = parameters
    if world > 1:
        from explaunch.experiments.sharded import local_parameters

        parameters_local = local_parameters(model)  # before any forward: the shards this process keeps

    prompts_path = Path(config.experiment_type.prompts_file or shipped_data("prompts.jsonl")).expanduser()
    prompts = select_prompts(load_prompts(prompts_path), tokenizer, batching, config.seed)
    if fsdp:  # every process must run the same forwards (each gathers weights from all): equal shares
        prompts = prompts[: len(prompts) - len(prompts) % world]
    prompts = prompts[rank::world]
    size = batching.batch_size
    batches = [
        tokenizer(prompts[i : i + size], return_tensors="pt", padding=True).to(device)
        for i in range(0, len(prompts), size)
    ]
    kwargs = generate_kwargs(batching, tokenizer)
    for i in range(batching.warmup_batches):
        timed_generate(model, batches[i % len(batches)], kwargs, tokenizer, batching.fixed_length)

    gpus = job_gpus("cuda", [device.index or 0]) if device.type == "cuda" else None
    prefill = None
    if config.energy.enabled:
        prefill_kwargs = {**kwargs, "max_new_tokens": 1, "min_new_tokens": 1}
        prefill = run_window(
            model, batches, prefill_kwargs, tokenizer, config, config.energy.prefill_window_s, world=world, gpus=gpus
        )
    memory = PeakMemory(device)
    window = run_window(
        model, batches, kwargs, tokenizer, config, config.energy.min_window_s, world=world, gpus=gpus, memory=memory
    )
    digest = hashlib.sha256()
    for new_ids in window.first_pass:
        digest.update(new_ids.numpy().astype("int64").tobytes())
    if outputs is not None:
        write_outputs(outputs, tokenizer, batches, window.first_pass)

    metrics = speed_metrics(window, batches)
    info: dict[str, Any] = {}
    metrics["model_parameters"] = parameters
    if world > 1:
        metrics["model_parameters_local"] = parameters_local
    metrics["memory_peak_rss_mib"] = (memory.peak_rss_bytes or 0) / MIB
    if memory.cuda_max_allocated_bytes is not None:
        metrics["memory_cuda_max_allocated_mib"] = memory.cuda_max_allocated_bytes / MIB

    layer_params, head_params = linear_parameters(model)
    analytical = [
        generate_flops(
            layer_params=layer_params,
            head_params=head_params,
            num_layers=model.config.num_hidden_layers,
            hidden_size=model.config.hidden_size,
            batch=int(b["input_ids"].shape[0]),
            prompt_len=int(b["input_ids"].shape[1]),
            new_tokens=int(new_ids.shape[1]),
        )
        for b, new_ids in zip(batches, window.first_pass, strict=True)
    ]
    per_batch: list[float] | None = None
    if config.experiment_type.flops == "counter":
        per_batch = count_flops(model, batches, kwargs)
    elif config.experiment_type.flops == "analytical":
        per_batch = analytical
    metrics["flops_analytical"] = sum(analytical)
    if per_batch is not None:  # one pass over the prompts; the window ran the batches window_iterations times
        metrics["flops"] = sum(per_batch)
        metrics["flops_per_output_token"] = metrics["flops"] / metrics["output_tokens"]

    if window.energy is not None:
        info["energy"] = energy_metrics(window, prefill, per_batch, metrics)

    info.update(
        device=str(device),
        dtype=str(dtype).removeprefix("torch."),
        torch_threads=torch.get_num_threads(),
        weights="pretrained" if config.model.pretrained_path else "random-init",
        flops_method={
            "counter": "torch FlopCounterMode, separate untimed pass",
            "analytical": "2N + attention",
            "none": "not counted",
        }[config.experiment_type.flops],
        memory_method=memory.method,
        prompts_file=str(prompts_path),
        output_sha256=digest.hexdigest(),
        iterations=[
            {"batch": b, "latency_s": t.latency_s, "ttft_s": t.ttft_s, "output_tokens": t.output_tokens}
            for b, t in zip(window.batch_of, window.timings, strict=True)
        ],
    )
    if outputs is not None:
        info["outputs_file"] = outputs.name
    return ExperimentResult(metrics=metrics, info=info)
