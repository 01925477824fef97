"""Shared test helpers: real items from ../shared/datasets and a tiny random model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
NLI = {"e": "entailment", "n": "neutral", "c": "contradiction"}


def chaosnli_items(n: int) -> list[dict]:
    """The first ``n`` ChaosNLI-SNLI items in the common format (skips if the data is absent)."""
    path = DATASETS / "chaosnli" / "chaosNLI_snli.jsonl"
    if not path.is_file():
        pytest.skip(f"{path} not found (real data lives in ../shared/datasets)")
    items = []
    with path.open() as fh:
        for line in fh:
            raw = json.loads(line)
            items.append({"id": raw["uid"], "premise": raw["example"]["premise"],
                          "hypothesis": raw["example"]["hypothesis"],
                          "label_counts": {NLI[k]: v for k, v in raw["label_counter"].items()}})
            if len(items) == n:
                break
    return items


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def build_tiny_model(folder: Path) -> Path:
    """A 2-layer random Llama with the default model's tokenizer: fast trainer mechanics tests."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from distjudge.models import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(None))
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=2048, tie_word_embeddings=True,
                         pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder
