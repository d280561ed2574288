"""Pure functions over timings and model shapes: latency summaries and an analytical FLOP count."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between closest ranks (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize(values: Sequence[float], prefix: str) -> dict[str, float]:
    """``{prefix}_mean``, ``_p50``, ``_p95`` (suffix ``_s``: the values are seconds)."""
    if not values:
        raise ValueError(f"no values to summarize for {prefix}")
    return {
        f"{prefix}_mean_s": sum(values) / len(values),
        f"{prefix}_p50_s": percentile(values, 50),
        f"{prefix}_p95_s": percentile(values, 95),
    }


def generate_flops(
    *,
    layer_params: int,
    head_params: int,
    num_layers: int,
    hidden_size: int,
    batch: int,
    prompt_len: int,
    new_tokens: int,
) -> float:
    """FLOPs that greedy generation with a KV cache executes, as a FLOP counter would see them.

    Dense layers: 2 FLOPs per weight per token (Kaplan et al. 2020, eq. 2.1). Attention: scores and weighted sum,
    4 x hidden x keys per layer per query token, over the full padded prompt in the prefill (the kernel computes
    the masked half too). The LM head runs on the last prompt token only in the prefill, then once per step.
    """
    per_layer_attention = 4.0 * num_layers * hidden_size
    prefill = 2.0 * layer_params * prompt_len + 2.0 * head_params + per_layer_attention * prompt_len * prompt_len
    decode = 0.0
    for step in range(1, new_tokens):  # the prefill already produced the first new token
        decode += 2.0 * (layer_params + head_params) + per_layer_attention * (prompt_len + step)
    return (prefill + decode) * batch
