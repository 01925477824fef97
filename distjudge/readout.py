"""Reading the judge's label distribution from one forward pass.

For each item the task's messages go through the model's chat template (with the generation
prompt), so the next token is the first token of the answer. At that position:

    log p(v)     = log_softmax(logits)                      full vocabulary, fp32
    log s(label) = logsumexp over the label's first tokens  (name, synonyms, case, leading space)
    label mass   = Σ_label s(label)                         how much the model answers with a label
    log q        = log s − logsumexp(log s)                 renormalized over the labels

A label's variants are deduplicated by token id, so each vocabulary token counts once. If two
labels share a first token (say "1" and "10" both start with "1"), one forward pass cannot tell
them apart: :func:`label_token_ids` refuses the task with an error instead of guessing.
Batches are left-padded with explicit position ids, and the LM head runs only at the last position.
A prefix shared by a batch's prompts can run once and be reused from its KV cache
(:mod:`distjudge.batching`).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from contextlib import nullcontext

import torch
from transformers import DynamicCache

from distjudge.task import Task, TaskError


def _variants(word: str) -> list[str]:
    forms = {word, word.lower(), word.upper(), word[:1].upper() + word[1:]}
    return sorted(forms | {" " + form for form in forms})


def label_token_ids(task: Task, tokenizer) -> list[list[int]]:
    """For each label, the distinct vocabulary ids that can start its answer."""
    owner: dict[int, str] = {}
    ids: list[list[int]] = []
    for label in task.labels:
        found: list[int] = []
        for word in label.words():
            for form in _variants(word):
                tokens = tokenizer.encode(form, add_special_tokens=False)
                if not tokens or not tokenizer.decode(tokens[:1]).strip():
                    continue  # a bare-space first token says nothing about the label
                token = tokens[0]
                if owner.get(token, label.name) != label.name:
                    raise TaskError(
                        f"task {task.name!r}: labels {owner[token]!r} and {label.name!r} share "
                        f"the first token {tokenizer.decode([token])!r} (from {form!r}); one "
                        "forward pass cannot separate them: rename a label or drop the synonym"
                    )
                owner[token] = label.name
                if token not in found:
                    found.append(token)
        if not found:
            raise TaskError(f"task {task.name!r}: label {label.name!r} has no usable token")
        ids.append(found)
    return ids


def encode_prompts(task: Task, tokenizer, items: Sequence[dict]) -> list[list[int]]:
    """Token ids of each item's prompt, ending where the answer's first token goes."""
    out = []
    for item in items:
        messages = task.render(item)
        if tokenizer.chat_template:
            text = tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
        else:  # a base model without a chat template: plain text and an answer cue
            text = "\n\n".join(m["content"] for m in messages) + "\nAnswer:"
        out.append(tokenizer(text, add_special_tokens=False)["input_ids"])
    return out


def truncate_prompt(ids: list[int], max_length: int | None, head: int = 64) -> list[int]:
    """Cut a too-long prompt in the middle: keep its first ``head`` and its last tokens.

    The start (chat header, instructions) and the end (the question asking for a label, and
    the answer position) survive; the long item text in between loses its middle.
    """
    if max_length is None or len(ids) <= max_length:
        return ids
    head = min(head, max_length // 4)
    return ids[:head] + ids[len(ids) - (max_length - head):]


def pad_left(sequences: Sequence[Sequence[int]], pad_id: int,
             prefix_length: int = 0) -> dict[str, torch.Tensor]:
    """Left-padded ``input_ids``, ``attention_mask`` and matching ``position_ids``.

    With ``prefix_length`` the sequences continue a shared prefix held in a KV cache: the mask
    covers the prefix too and positions start after it.
    """
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if seq:
            input_ids[row, width - len(seq):] = torch.as_tensor(seq, dtype=torch.long)
            mask[row, width - len(seq):] = 1
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0) + prefix_length
    if prefix_length:
        mask = torch.cat([torch.ones((len(sequences), prefix_length), dtype=torch.long), mask], 1)
    return {"input_ids": input_ids, "attention_mask": mask, "position_ids": position_ids}


def autocast(device_type: str, dtype: torch.dtype):
    """Autocast to ``dtype`` (a no-op for fp32). Inside one such region each weight is cast once:
    a caller that runs many batches holds it open around them all."""
    return (torch.autocast(device_type=device_type, dtype=dtype) if dtype != torch.float32
            else nullcontext())


def can_share_prefix(model) -> bool:
    """Whether a cached prefix gives the same logits: full attention in every layer."""
    config = model.config.get_text_config(decoder=True)
    types = getattr(config, "layer_types", None) or ["full_attention"]
    return all(t == "full_attention" for t in types) and not getattr(config, "sliding_window", 0)


def cache_keyword(model) -> str:
    """The keyword ``model.forward`` takes a KV cache by: ``cache`` in newer transformers 5.x,
    ``past_key_values`` before (the old name still works there, with a deprecation warning)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


@torch.inference_mode()
def prefix_cache(model, prefix: Sequence[int], dtype: torch.dtype = torch.float32):
    """Keys and values of ``prefix`` per layer, to be shared by a batch (:func:`answer_logits`).

    Without autograd: kept keys and values carrying a graph would keep every layer's
    activations of the prefix's forward pass alive as long as the prefix is in use.
    """
    ids = torch.as_tensor([list(prefix)], dtype=torch.long, device=model.device)
    with autocast(ids.device.type, dtype):
        out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
    cache = getattr(out, "cache", None)
    cache = out.past_key_values if cache is None else cache
    return [(layer.keys, layer.values) for layer in cache.layers]


class SharedPrefixCache(DynamicCache):
    """A shared prefix's keys and values that a batch attends to but never extends.

    Each layer's concatenation (prefix + batch) lives only while that layer runs; a
    ``DynamicCache`` would keep all layers' until the forward pass returns, a transient of
    layers x rows x (prefix + batch) keys and values that sets the judge's peak memory.
    """

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int,
               *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        layer = self.layers[layer_idx]
        return (torch.cat([layer.keys, key_states], dim=-2),
                torch.cat([layer.values, value_states], dim=-2))


def answer_logits(model, batch: dict[str, torch.Tensor], dtype: torch.dtype = torch.float32,
                  prefix: list[tuple[torch.Tensor, torch.Tensor]] | None = None):
    """Full-vocabulary logits [B, V] (fp32) at the answer position of a left-padded batch,
    optionally continuing a shared ``prefix`` from :func:`prefix_cache`."""
    extra = {"use_cache": False}
    if prefix:
        rows = batch["input_ids"].shape[0]
        extra = {"use_cache": True, cache_keyword(model): SharedPrefixCache(
            [(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1)) for k, v in prefix],
            config=model.config)}
    with autocast(batch["input_ids"].device.type, dtype):
        out = model(**batch, logits_to_keep=1, **extra)
    return out.logits[:, -1].float()


def label_index_tensor(token_ids: list[list[int]]) -> torch.Tensor:
    """[C, K] token ids per label, padded with -1 (masked out in :func:`label_log_probs`)."""
    width = max(len(ids) for ids in token_ids)
    return torch.tensor([ids + [-1] * (width - len(ids)) for ids in token_ids], dtype=torch.long)


def label_log_probs(logits: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log_q [B, C], log_label_mass [B])`` from answer-position logits and a label index."""
    log_p = logits.float().log_softmax(-1)
    valid = index >= 0
    gathered = log_p[:, index.clamp(min=0)]  # [B, C, K]
    gathered = gathered.masked_fill(~valid, float("-inf"))
    per_label = gathered.logsumexp(-1)
    log_mass = per_label.logsumexp(-1)
    return per_label - log_mass[:, None], log_mass
