"""The figures of a measured LLM window (:mod:`explaunch.experiments.llm_window`): speed and latency, energy per
token, per query and per FLOP (prefill and decode apart), FLOPs counted by torch in an untimed pass; and the files
that keep what ``job.json`` should not: the window's calls (``iterations.csv``) and the generated text."""

from __future__ import annotations

import csv
import functools
import io
import json
from pathlib import Path
from typing import Any

import torch

from explaunch.experiments.llm_window import Window
from explaunch.measure.compute import summarize
from explaunch.measure.energy import JOULES_PER_KWH, headline_quality
from explaunch.sweepdir.records import write_text_atomic


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


def write_iterations(path: Path, iterations: list[dict[str, Any]]) -> None:
    """Per-call figures of the measured window (batch, latency_s, ttft_s, output_tokens), as CSV: a 10 s window
    of a small model holds hundreds of calls, which in ``job.json`` made every reader of the sweep (report,
    dashboard) parse ~70 KB per job."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(iterations[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(iterations)
    write_text_atomic(path, out.getvalue())


def energy_metrics(
    window: Window, prefill: Window | None, flops_per_batch: list[float] | None, metrics: dict[str, float]
) -> dict[str, Any]:
    """The window's energy and what people compare it by (per output token, per query, per FLOP), prefill and
    decode apart; adds them to ``metrics``, returns the record's ``info.energy``. Its ``quality`` is the worst of
    the windows whose figures it reports (the prefill window's too, where decode figures come from it), each reason
    naming its window; ``quality_by_window`` and ``prefill`` keep each window's own."""
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
    reported = {"generate": reading}
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
        reported["prefill"] = prefill_reading
    elif prefill is not None and prefill.energy is not None:
        info["prefill"] = {"error": prefill.energy.error}
    return info | headline_quality(reported)


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


def speed_metrics(window: Window, batches: list[dict[str, torch.Tensor]]) -> dict[str, float]:
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
