"""Timed ``generate`` calls and the measured window that repeats them (see :func:`run_window`): latency, time to
the first token (a logits processor that notes the clock after each forward pass) and tokens of every call, inside
an energy tracker when energy is on."""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from explaunch.config import BatchingConfig, ExplaunchConfig
from explaunch.measure.energy import EnergyTracker
from explaunch.measure.memory import PeakMemory


@dataclass(frozen=True)
class BatchTiming:
    latency_s: float
    ttft_s: float
    input_tokens: int
    output_tokens: int
    prompt_len: int  # padded length the model processed
    new_tokens: int  # generation steps


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


def generate_kwargs(batching: BatchingConfig, tokenizer: Any) -> dict[str, Any]:
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
