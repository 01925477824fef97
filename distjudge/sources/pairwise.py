"""Pairwise sources and response order: MT-Bench human votes, :func:`swap_pair`.

MT-Bench (turn 1): votes are grouped per (question, unordered model pair); response A is the
model whose name sorts first, and a vote cast with the models in the other order has its winner
flipped. One judge voted twice on one pair (author_0, Q128, claude-v1 vs gpt-3.5-turbo, once per
order, both tie): by default a judge counts once per pair (first vote kept; ``dedupe=False``
keeps both). The one empty answer (llama-13b on Q127) becomes the text ``[empty response]``.
"""

from __future__ import annotations

import numpy as np

from distjudge.sources.raw import Row, file_cache, need_file, read_jsonl
from distjudge.sources.registry import register
from distjudge.task import Task

PAIRWISE = ["A", "B", "tie"]
EMPTY_ANSWER = "[empty response]"
SWAPPED = "#swapped"


@file_cache
def mt_bench_questions(path) -> dict:
    out = {}
    for line, record in read_jsonl(path):
        row = Row(record, path, line)
        turns = row.get("turns", list)
        if not turns or not isinstance(turns[0], str) or not turns[0].strip():
            row.fail("turns", "expected a list whose first turn is text")
        out[row.get("question_id", int)] = turns[0]
    return out


@file_cache
def mt_bench_answers(path) -> dict:
    out = {}
    for line, record in read_jsonl(path):
        row = Row(record, path, line)
        answer = row.text("answer", allow_empty=True)
        out[(row.get("question_id", int), row.text("model"))] = answer if answer.strip() else None
    return out


@file_cache
def mt_bench_votes(path, dedupe: bool) -> list[dict]:
    questions = mt_bench_questions(path.parent / "question.jsonl")
    answers = mt_bench_answers(path.parent / "human_judgment_answers.jsonl")
    items: dict = {}
    seen: set = set()
    for line, record in read_jsonl(path):
        row = Row(record, path, line)
        qid, judge = row.get("question_id", int), row.text("judge")
        model_a, model_b, winner = row.text("model_a"), row.text("model_b"), row.text("winner")
        if winner not in ("model_a", "model_b", "tie"):
            row.fail("winner", f"unknown winner {winner!r} (expected model_a, model_b or tie)")
        if model_a == model_b:
            row.fail("model_b", "same model on both sides")
        if qid not in questions:
            row.fail("question_id", f"question {qid} not in question.jsonl")
        for key, model in (("model_a", model_a), ("model_b", model_b)):
            if (qid, model) not in answers:
                row.fail(key, f"no answer of {model} to question {qid}")
        first, second = sorted((model_a, model_b))
        label = "tie" if winner == "tie" else "A" if row.data[winner] == first else "B"
        if dedupe:
            if (qid, judge, first, second) in seen:
                continue
            seen.add((qid, judge, first, second))
        key = (qid, first, second)
        if key not in items:
            items[key] = {
                "id": f"q{qid}/{first}/{second}", "context": questions[qid],
                "response_a": answers[(qid, first)] or EMPTY_ANSWER,
                "response_b": answers[(qid, second)] or EMPTY_ANSWER,
                "label_counts": dict.fromkeys(PAIRWISE, 0), "group": f"mt-bench:q{qid}",
                "question_id": qid, "model_a": first, "model_b": second,
            }
        items[key]["label_counts"][label] += 1
    return list(items.values())


def load_mt_bench(root, dedupe: bool = True):
    path = need_file(root / "mt-bench-human/human_judgments.jsonl")
    yield from mt_bench_votes(path, dedupe)


register("mt-bench", "pairwise", "CC BY 4.0 (votes, answers); questions Apache-2.0",
         """MT-Bench human judgments, turn 1 (Zheng et al. 2023): 1,689 expert/author votes on 80
         questions x pairs of 6 models, grouped per (question, unordered model pair): 910 items,
         1-7 votes each (most 1-2: coarse targets; report >= 2-vote items separately). A = the
         model whose name sorts first; a judge's repeated vote on a pair counts once. group =
         question, so a question's pairs (and their swapped copies) stay on one side of a split.""",
         load_mt_bench)


# --- response order -------------------------------------------------------------------------

def swap_pair(item: dict, task: Task) -> dict:
    """The same item with its two responses in the other order and the A/B labels flipped.

    The id gets the suffix ``#swapped`` (swapping a swapped copy gives the original id back) and
    the ``group`` is the original's (its id when it had none), so a split keeps both orders
    together. Other ``x_a``/``x_b`` fields (e.g. ``model_a``/``model_b``) are swapped too;
    ``label_counts``, ``annotations`` and a validated ``counts`` vector are all flipped.
    """
    fa, fb, la, lb = task.swap_spec()
    flip = {la: lb, lb: la}
    out = task.swapped(item)
    for key in item:
        if key.endswith("_a") and key[:-2] + "_b" in item and key not in (fa, fb):
            other = key[:-2] + "_b"
            out[key], out[other] = item[other], item[key]
    if "label_counts" in item:
        flipped = {flip.get(k, k): v for k, v in item["label_counts"].items()}
        ordered = {k: flipped.pop(k) for k in item["label_counts"] if k in flipped}
        out["label_counts"] = {**ordered, **flipped}
    if "annotations" in item:
        out["annotations"] = [flip.get(v, v) if isinstance(v, str) else v
                              for v in item["annotations"]]
    if item.get("counts") is not None:
        out["counts"] = np.asarray(item["counts"])[task.swap_permutation()]
    item_id = str(item["id"])
    out["id"] = item_id[: -len(SWAPPED)] if item_id.endswith(SWAPPED) else item_id + SWAPPED
    out["group"] = item.get("group") or item_id
    return out


def both_orders(items: list[dict], task: Task) -> list[dict]:
    """Each item followed by its swapped copy (originals get their id as group if they lack one)."""
    out = []
    for item in items:
        original = item if item.get("group") else {**item, "group": str(item["id"])}
        out += [original, swap_pair(original, task)]
    return out
