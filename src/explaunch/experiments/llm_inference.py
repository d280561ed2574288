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

import csv
import functools
import hashlib
import io
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
from explaunch.measure.energy import JOULES_PER_KWH, EnergyTracker, job_gpus
from explaunch.measure.memory import PeakMemory
from explaunch.sweepdir.records import write_text_atomic

MB = 1024 * 1024
OUTPUTS_FILE = "outputs.jsonl"
ITERATIONS_FILE = "iterations.csv"  # the window's calls, one row each: kept out of job.json, which readers parse whole
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


def count_flops(model: Any, batches: list[dict[str, torch.Tensor]], kwargs: dict[str, Any]) -> list[float]:
    """FLOPs of one ``generate`` of each batch, counted by torch in a separate, untimed pass."""
    from torch.utils.flop_counter import FlopCounterMode

    _count_cpu_attention()
    counts = []
    for batch in batches:
        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            model.generate(**batch, **kwargs)
        counts.append(float(counter.get_total_flops()))
    return counts


@dataclass(frozen=True)
class Window:
    """A measured window: ``generate`` calls on the batches in turn (iteration i on batch i % len(batches)) until
    it lasted ``min_window_s``, ran ``min_iterations`` calls and every batch once."""

    timings: list[BatchTiming]
    batch_of: list[int]  # the batch each iteration ran
    first_pass: list[torch.Tensor]  # the token ids each batch generated, first time round
    energy: EnergyTracker | None
    seconds: float
    queries: int  # prompts processed: the rows of every iteration's batch


def run_window(
    model: Any,
    batches: list[dict[str, torch.Tensor]],
    kwargs: dict[str, Any],
    tokenizer: Any,
    config: ExplaunchConfig,
    min_window_s: float,
    *,
    world: int = 1,
    gpus: dict[str, Any] | None = None,
    memory: PeakMemory | None = None,
) -> Window:
    """Repeat ``generate`` over the batches for at least ``min_window_s`` and ``energy.min_iterations`` calls (each
    batch at least once), inside an energy tracker when energy is on. With several processes, they start together
    and stop after the same number of calls (fsdp needs equal forwards; ddp a shared window)."""
    device = model.device
    synchronize = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None
    timings: list[BatchTiming] = []
    batch_of: list[int] = []
    first_pass: list[torch.Tensor] = []
    if world > 1:
        torch.distributed.barrier()
    with ExitStack() as region:
        energy = (
            region.enter_context(EnergyTracker.from_config(config.energy, gpus, synchronize=synchronize))
            if config.energy.enabled
            else None
        )
        if memory is not None:
            region.enter_context(memory)
        start = time.perf_counter()
        while True:
            index = len(timings) % len(batches)
            timing, new_ids = timed_generate(model, batches[index], kwargs, tokenizer, config.batching.fixed_length)
            timings.append(timing)
            batch_of.append(index)
            if len(first_pass) < len(batches):
                first_pass.append(new_ids.cpu())
            done = (
                time.perf_counter() - start >= min_window_s
                and len(timings) >= config.energy.min_iterations
                and len(timings) >= len(batches)
            )
            if _all_done(done, device, world):
                break
        seconds = time.perf_counter() - start
    queries = sum(int(batches[b]["input_ids"].shape[0]) for b in batch_of)
    return Window(timings, batch_of, first_pass, energy, seconds, queries)


def _all_done(done: bool, device: torch.device, world: int) -> bool:
    """Whether every process of the group is done (one all-reduce per iteration: microseconds on gloo/NCCL)."""
    if world == 1:
        return done
    flag = torch.tensor([0 if done else 1], dtype=torch.int32, device=device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return int(flag.item()) == 0


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


def write_iterations(path: Path, iterations: list[dict[str, Any]]) -> None:
    """Per-call figures of the measured window (batch, latency_s, ttft_s, output_tokens), as CSV: a 10 s window
    of a small model holds hundreds of calls, which in ``job.json`` made every reader of the sweep (report,
    dashboard) parse ~70 KB per job."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(iterations[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(iterations)
    write_text_atomic(path, out.getvalue())


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
    kwargs = _generate_kwargs(batching, tokenizer)
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

    metrics = _speed_metrics(window, batches)
    info: dict[str, Any] = {}
    metrics["model_parameters"] = parameters
    if world > 1:
        metrics["model_parameters_local"] = parameters_local
    metrics["memory_peak_rss_mib"] = (memory.peak_rss_bytes or 0) / MB
    if memory.cuda_max_allocated_bytes is not None:
        metrics["memory_cuda_max_allocated_mib"] = memory.cuda_max_allocated_bytes / MB

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


def energy_metrics(
    window: Window, prefill: Window | None, flops_per_batch: list[float] | None, metrics: dict[str, float]
) -> dict[str, Any]:
    """The window's energy and what people compare it by (per output token, per query, per FLOP), prefill and
    decode apart; adds them to ``metrics``, returns the record's ``info.energy``."""
    assert window.energy is not None
    if window.energy.reading is None:
        return {"error": window.energy.error}
    reading = window.energy.reading
    joules = reading.energy_joules
    metrics.update(reading.metrics("energy"))
    metrics["energy_iterations"] = float(len(window.timings))
    tokens, queries = metrics["window_output_tokens"], metrics["window_queries"]
    if joules > 0:
        metrics["energy_per_output_token_j"] = joules / tokens
        metrics["energy_per_query_j"] = joules / queries
        metrics["queries_per_kwh"] = queries / (joules / JOULES_PER_KWH)
        metrics["tokens_per_joule"] = tokens / joules
        if flops_per_batch is not None:
            metrics["flops_per_joule"] = sum(flops_per_batch[b] for b in window.batch_of) / joules
    info: dict[str, Any] = reading.to_dict() | {
        "region": "timed generate calls (after warmup)",
        "iterations": len(window.timings),
    }
    if prefill is not None and prefill.energy is not None and prefill.energy.reading is not None:
        prefill_reading = prefill.energy.reading
        per_query = prefill_reading.energy_joules / prefill.queries
        decode_joules = joules - per_query * queries
        decode_tokens = tokens - queries  # each query's first token comes from the prefill
        metrics.update(
            prefill_window_s=prefill_reading.window_s,
            prefill_energy_joules=prefill_reading.energy_joules,
            prefill_energy_per_query_j=per_query,
            prefill_energy_per_input_token_j=prefill_reading.energy_joules
            / sum(t.input_tokens for t in prefill.timings),
            decode_energy_joules=decode_joules,
        )
        if decode_tokens > 0:
            metrics["decode_energy_per_token_j"] = decode_joules / decode_tokens
        info["prefill"] = prefill_reading.to_dict() | {
            "region": "generate of one token per query (the prompt's forward pass), repeated",
            "iterations": len(prefill.timings),
        }
        info["decode_method"] = (
            "decode energy = the generate window's energy - prefill energy per query (from the prefill window) x "
            "the window's queries; per token: over the tokens after each query's first"
        )
    elif prefill is not None and prefill.energy is not None:
        info["prefill"] = {"error": prefill.energy.error}
    return info


def write_outputs(path: Path, tokenizer: Any, batches: list[dict[str, torch.Tensor]], generated: list[Any]) -> None:
    """The first pass's generations, one JSON line per prompt: its text, the generated text and token ids."""
    lines = []
    for batch, new_ids in zip(batches, generated, strict=True):
        prompt_texts = tokenizer.batch_decode(batch["input_ids"], skip_special_tokens=True)
        for prompt, ids in zip(prompt_texts, new_ids.tolist(), strict=True):
            text = tokenizer.decode(ids, skip_special_tokens=True)
            lines.append(json.dumps({"prompt": prompt, "output": text, "output_token_ids": ids}))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(path)


def _speed_metrics(window: Window, batches: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    """Token counts of one pass over the prompts (deterministic), speed over the whole window."""
    timings = window.timings
    rows = [int(b["input_ids"].shape[0]) for b in batches]
    first = timings[: len(batches)]
    total_time = sum(t.latency_s for t in timings)
    window_output = sum(t.output_tokens for t in timings)
    window_input = sum(t.input_tokens for t in timings)
    window_queries = window.queries
    decode_time = sum(t.latency_s - t.ttft_s for t in timings)
    metrics: dict[str, float] = {
        "num_batches": float(len(batches)),
        "queries": float(sum(rows)),
        "input_tokens": float(sum(t.input_tokens for t in first)),
        "output_tokens": float(sum(t.output_tokens for t in first)),
        "window_iterations": float(len(timings)),
        "window_queries": float(window_queries),
        "window_input_tokens": float(window_input),
        "window_output_tokens": float(window_output),
        "generate_time_s": total_time,
        "prefill_time_s": sum(t.ttft_s for t in timings),
        "decode_time_s": decode_time,
        "throughput_e2e_tokens_per_s": window_output / total_time,
        "throughput_total_tokens_per_s": (window_input + window_output) / total_time,
    }
    if decode_time > 0:
        metrics["throughput_decode_tokens_per_s"] = (window_output - window_queries) / decode_time
    metrics.update(summarize([t.latency_s for t in timings], "latency_batch"))
    metrics.update(summarize([t.ttft_s for t in timings], "ttft"))
    decode = [(t.latency_s - t.ttft_s) / (t.new_tokens - 1) for t in timings if t.new_tokens > 1]
    if decode:
        metrics.update(summarize(decode, "time_per_output_token"))
    return metrics
