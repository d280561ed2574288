"""What an LLM inference job loads before it measures anything: its device and dtype, the tokenizer, the model (real
weights from a local path, or random weights of the configured sizes) and the prompts, filtered by token length."""

from __future__ import annotations

import json
import random
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from explaunch.config import BatchingConfig, HardwareConfig, ModelConfig
from explaunch.errors import ConfigError


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
