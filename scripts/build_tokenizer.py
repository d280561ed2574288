"""Rebuild the tokenizer shipped in src/explaunch/data/tokenizer/ from the shipped prompt set.

A byte-level BPE (as GPT-2/Llama 3 use) trained on prompts.jsonl, so the random-init models tokenize offline.
Run once after changing the prompts:  .venv/bin/python scripts/build_tokenizer.py
"""

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

DATA = Path(__file__).resolve().parents[1] / "src" / "explaunch" / "data"
VOCAB_SIZE = 2048
SPECIAL = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}


def main() -> None:
    texts = [json.loads(line)["text"] for line in (DATA / "prompts.jsonl").read_text().splitlines() if line]
    tokenizer = Tokenizer(models.BPE(unk_token=SPECIAL["unk_token"]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=list(SPECIAL.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, **SPECIAL)
    fast.padding_side = "left"  # decoder-only generation pads on the left
    fast.save_pretrained(DATA / "tokenizer")
    print(f"vocab {len(fast)} tokens -> {DATA / 'tokenizer'}")


if __name__ == "__main__":
    main()
