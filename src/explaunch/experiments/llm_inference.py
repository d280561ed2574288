"""LLM inference: batched ``generate`` over a prompt set, measuring speed, FLOPs, memory and energy.

Protocol (as optimum-benchmark and AIEnergyScore do it): prompts filtered by token length, ``warmup_batches``
unmeasured batches, then every batch timed; energy and peak memory cover exactly the timed batches. FLOPs are counted
in a separate, untimed pass so that counting never slows what is timed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
import time
from contextlib import ExitStack
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessor, LogitsProcessorList

from explaunch.config import BatchingConfig, ExplaunchConfig, HardwareConfig, ModelConfig
from explaunch.errors import ConfigError
from explaunch.experiments.base import ExperimentResult
from explaunch.measure.compute import generate_flops, summarize
from explaunch.measure.energy import EnergyTracker
from explaunch.measure.memory import PeakMemory

MB = 1024 * 1024
# torch's own choice at import (it honours OMP_NUM_THREADS, which joblib's workers set to cores / workers); a job
# that asked for another count must not leave it to the next job of a reused worker.
DEFAULT_THREADS = torch.get_num_threads()


@dataclass(frozen=True)
class BatchTiming:
    latency_s: float
    ttft_s: float
    input_tokens: int
    output_tokens: int
    prompt_len: int  # padded length the model processed
    new_tokens: int  # generation steps


def resolve_device(hardware: HardwareConfig, rank: int = 0) -> torch.device:
    """The device of process ``rank`` of a job: the CPU, or ``gpu_ids[rank]`` (all visible GPUs when none given)."""
    if hardware.device == "cpu" or (hardware.device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError("hardware.device", hardware.device, "no CUDA device is visible here; use cpu or auto")
    ids = hardware.gpu_ids or list(range(torch.cuda.device_count()))
    return torch.device("cuda", ids[rank % len(ids)])


def resolve_dtype(hardware: HardwareConfig) -> torch.dtype:
    return {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[hardware.mixed_precision]


def shipped_data(name: str) -> Path:
    return Path(str(resources.files("explaunch") / "data" / name))


def load_tokenizer(model: ModelConfig) -> Any:
    """The model's own tokenizer when it has a local path, else the byte-level BPE shipped with explaunch."""
    path = model.tokenizer_path or model.pretrained_path or str(shipped_data("tokenizer"))
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    tokenizer.padding_side = "left"  # decoder-only models generate after the last prompt token
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def build_model(model: ModelConfig, tokenizer: Any, device: torch.device, dtype: torch.dtype) -> Any:
    """Real weights from ``pretrained_path``, or random weights (seeded by the caller) from the sizes in ``model``."""
    if model.pretrained_path:
        net = AutoModelForCausalLM.from_pretrained(model.pretrained_path, local_files_only=True, dtype=dtype)
    else:
        from transformers import LlamaConfig, MistralConfig

        sizes: dict[str, Any] = dict(
            vocab_size=len(tokenizer),
            hidden_size=model.hidden_size,
            intermediate_size=model.intermediate_size,
            num_hidden_layers=model.num_hidden_layers,
            num_attention_heads=model.num_attention_heads,
            num_key_value_heads=model.num_key_value_heads,
            max_position_embeddings=model.max_position_embeddings,
            rope_theta=model.rope_theta,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        if model.family == "mistral":
            arch: Any = MistralConfig(sliding_window=model.sliding_window, **sizes)
        else:
            arch = LlamaConfig(**sizes)
        net = AutoModelForCausalLM.from_config(arch, dtype=dtype)  # type: ignore[no-untyped-call]
    return net.to(device).eval()  # type: ignore[arg-type]


def load_prompts(path: Path) -> list[str]:
    texts = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                texts.append(str(json.loads(line)["text"]))
            except (json.JSONDecodeError, KeyError, TypeError):
                raise ConfigError(
                    "experiment_type.prompts_file", path, f"line {number} is not JSON with a 'text' field"
                ) from None
    return texts


def select_prompts(texts: list[str], tokenizer: Any, batching: BatchingConfig, seed: int) -> list[str]:
    """Prompts whose token count lies in [min_prompt_tokens, max_prompt_tokens], ``num_prompts`` of them, seeded."""
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=True)["input_ids"]]
    low, high = batching.min_prompt_tokens, batching.max_prompt_tokens
    eligible = [text for text, n in zip(texts, lengths, strict=True) if low <= n <= high]
    if len(eligible) < batching.num_prompts:
        raise ConfigError(
            "batching.num_prompts",
            batching.num_prompts,
            f"only {len(eligible)} of {len(texts)} prompts have {batching.min_prompt_tokens}.."
            f"{batching.max_prompt_tokens} tokens; lower num_prompts or widen the length filter",
        )
    return random.Random(seed).sample(eligible, batching.num_prompts)


class _StepClock(LogitsProcessor):
    """Called once per generated token, right after the forward pass: the first call ends the prefill (TTFT)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.times: list[float] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.times.append(time.perf_counter())
        return scores


def _generate_kwargs(batching: BatchingConfig, tokenizer: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = dict(
        max_new_tokens=batching.max_new_tokens,
        do_sample=batching.do_sample,
        pad_token_id=tokenizer.pad_token_id,
    )
    if batching.fixed_length:
        kwargs["min_new_tokens"] = batching.max_new_tokens
    if batching.do_sample:
        kwargs["temperature"] = batching.temperature
    return kwargs


def count_output_tokens(new_ids: torch.Tensor, eos_token_id: int | None, fixed_length: bool) -> int:
    """Tokens generated per row: all of them at fixed length, else up to and including the first EOS."""
    if fixed_length or eos_token_id is None:
        return int(new_ids.numel())
    total = 0
    for row in new_ids.tolist():
        total += row.index(eos_token_id) + 1 if eos_token_id in row else len(row)
    return total


def timed_generate(
    model: Any, batch: dict[str, torch.Tensor], kwargs: dict[str, Any], tokenizer: Any, fixed_length: bool
) -> tuple[BatchTiming, torch.Tensor]:
    device = model.device
    clock = _StepClock(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(**batch, logits_processor=LogitsProcessorList([clock]), **kwargs)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    end = time.perf_counter()
    prompt_len = int(batch["input_ids"].shape[1])
    new_ids = out[:, prompt_len:]
    timing = BatchTiming(
        latency_s=end - start,
        ttft_s=(clock.times[0] if clock.times else end) - start,
        input_tokens=int(batch["attention_mask"].sum()),
        output_tokens=count_output_tokens(new_ids, tokenizer.eos_token_id, fixed_length),
        prompt_len=prompt_len,
        new_tokens=int(new_ids.shape[1]),
    )
    return timing, new_ids


def linear_parameters(model: Any) -> tuple[int, int]:
    """Weights in matrix multiplies: (the decoder layers', the LM head's). Embeddings are lookups, not counted."""
    head = model.get_output_embeddings()
    total = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    return total - head.weight.numel(), head.weight.numel()


@functools.cache
def _count_cpu_attention() -> None:
    """torch's FlopCounterMode knows the CUDA attention kernels but not the CPU one that SDPA runs here."""
    from torch.utils.flop_counter import register_flop_formula, sdpa_flop_count

    @register_flop_formula(torch.ops.aten._scaled_dot_product_flash_attention_for_cpu)
    def _cpu_sdpa(query_shape: Any, key_shape: Any, value_shape: Any, *args: Any, **kwargs: Any) -> int:
        return int(sdpa_flop_count(query_shape, key_shape, value_shape))  # type: ignore[no-untyped-call]


def count_flops(model: Any, batches: list[dict[str, torch.Tensor]], kwargs: dict[str, Any]) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    _count_cpu_attention()
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        for batch in batches:
            model.generate(**batch, **kwargs)
    return float(counter.get_total_flops())


def run(config: ExplaunchConfig, job_dir: Path) -> ExperimentResult:
    if config.sharding.strategy != "none":
        from explaunch.experiments.sharded import run_sharded

        return run_sharded(config, job_dir)
    torch.set_num_threads(config.hardware.num_threads or DEFAULT_THREADS)
    return measure(config, resolve_device(config.hardware))


def measure(config: ExplaunchConfig, device: torch.device, rank: int = 0, world: int = 1) -> ExperimentResult:
    """Build the model, take this process's share of the prompts (every ``world``-th from ``rank``), warm up, time
    every batch. With several processes, they start the timed region together (a barrier)."""
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
    kwargs = _generate_kwargs(batching, tokenizer)
    for i in range(batching.warmup_batches):
        timed_generate(model, batches[i % len(batches)], kwargs, tokenizer, batching.fixed_length)

    timings: list[BatchTiming] = []
    digest = hashlib.sha256()
    if world > 1:
        torch.distributed.barrier()
    with ExitStack() as region:
        energy = (
            region.enter_context(EnergyTracker(config.energy.country_iso_code, config.energy.measure_power_secs))
            if config.energy.enabled
            else None
        )
        memory = region.enter_context(PeakMemory(device))
        for batch in batches:
            timing, new_ids = timed_generate(model, batch, kwargs, tokenizer, batching.fixed_length)
            timings.append(timing)
            digest.update(new_ids.cpu().numpy().astype("int64").tobytes())

    metrics = _speed_metrics(timings)
    info: dict[str, Any] = {}
    metrics["model_parameters"] = parameters
    if world > 1:
        metrics["model_parameters_local"] = parameters_local
    metrics["memory_peak_rss_mb"] = (memory.peak_rss_bytes or 0) / MB
    if memory.cuda_max_allocated_bytes is not None:
        metrics["memory_cuda_max_allocated_mb"] = memory.cuda_max_allocated_bytes / MB

    layer_params, head_params = linear_parameters(model)
    analytical = sum(
        generate_flops(
            layer_params=layer_params,
            head_params=head_params,
            num_layers=model.config.num_hidden_layers,
            hidden_size=model.config.hidden_size,
            batch=int(b["input_ids"].shape[0]),
            prompt_len=t.prompt_len,
            new_tokens=t.new_tokens,
        )
        for b, t in zip(batches, timings, strict=True)
    )
    metrics["flops_analytical"] = analytical
    if config.experiment_type.flops == "counter":
        metrics["flops"] = count_flops(model, batches, kwargs)
    elif config.experiment_type.flops == "analytical":
        metrics["flops"] = analytical
    if "flops" in metrics:
        metrics["flops_per_output_token"] = metrics["flops"] / metrics["output_tokens"]

    if energy is not None and energy.error:
        info["energy"] = {"error": energy.error}
    if energy is not None and energy.reading is not None:
        reading = energy.reading
        metrics.update(reading.metrics("energy"))
        if reading.energy_joules > 0:
            metrics["tokens_per_joule"] = metrics["output_tokens"] / reading.energy_joules
        info["energy"] = reading.to_dict() | {"region": "timed batches (after warmup)"}

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
        batch_latencies_s=[t.latency_s for t in timings],
    )
    return ExperimentResult(metrics=metrics, info=info)


def _speed_metrics(timings: list[BatchTiming]) -> dict[str, float]:
    total_time = sum(t.latency_s for t in timings)
    input_tokens = sum(t.input_tokens for t in timings)
    output_tokens = sum(t.output_tokens for t in timings)
    metrics: dict[str, float] = {
        "num_batches": float(len(timings)),
        "input_tokens": float(input_tokens),
        "output_tokens": float(output_tokens),
        "generate_time_s": total_time,
        "throughput_tokens_per_s": output_tokens / total_time,
        "throughput_total_tokens_per_s": (input_tokens + output_tokens) / total_time,
    }
    metrics.update(summarize([t.latency_s for t in timings], "latency_batch"))
    metrics.update(summarize([t.ttft_s for t in timings], "ttft"))
    decode = [(t.latency_s - t.ttft_s) / (t.new_tokens - 1) for t in timings if t.new_tokens > 1]
    if decode:
        metrics.update(summarize(decode, "time_per_output_token"))
    return metrics
