"""NLI sources: SNLI 1.0 dev/test, ChaosNLI (SNLI, MNLI-m, alphaNLI) and VariErr-NLI.

Ids are the upstream pair ids (SNLI ``pairID`` == ChaosNLI ``uid``; VariErr ``id`` == ChaosNLI-MNLI
``uid``) so that overlapping sources can be deduplicated; the group is the premise text.
"""

from __future__ import annotations

from pathlib import Path

from distjudge.sources.raw import Row, as_int, count_labels, file_cache, read_jsonl, text_key
from distjudge.sources.registry import register

NLI = ["entailment", "neutral", "contradiction"]
NLI_NAMES = {name: name for name in NLI}
NLI_SHORT = {"e": "entailment", "n": "neutral", "c": "contradiction"}
ANLI = ["1", "2"]

SNLI_LICENSE = "CC BY-SA 4.0"
CHAOS_LICENSE = "CC BY-NC 4.0 (non-commercial)"


def _nli_item(item_id: str, premise: str, hypothesis: str, counts: dict, **extra) -> dict:
    return {"id": item_id, "premise": premise, "hypothesis": hypothesis, "label_counts": counts,
            "group": text_key("premise", premise), **extra}


@file_cache
def snli_file(path: Path) -> list[dict]:
    items = []
    for line, record in read_jsonl(path):
        row = Row(record, path, line)
        labels = row.get("annotator_labels", list)
        items.append(_nli_item(
            row.text("pairID"), row.text("sentence1"), row.text("sentence2"),
            count_labels(labels, NLI_NAMES, row, "annotator_labels", NLI),
            gold_label=row.get("gold_label", str, optional=True) or "-",
        ))
    return items


def _counter(row: Row, key: str, mapping: dict, labels: list[str]) -> dict:
    raw = row.get(key, dict)
    counts = dict.fromkeys(labels, 0)
    for label, value in raw.items():
        if label not in mapping:
            row.fail(key, f"unknown label {label!r} (expected one of {', '.join(mapping)})")
        counts[mapping[label]] += as_int(value, row, key, 0)
    if not sum(counts.values()):
        row.fail(key, "no annotations")
    return counts


@file_cache
def chaosnli_file(path: Path, abductive: bool) -> list[dict]:
    items = []
    for line, record in read_jsonl(path):
        row = Row(record, path, line)
        uid = row.text("uid")
        example = row.obj("example")
        if abductive:
            obs1, obs2 = example.text("obs1"), example.text("obs2")
            items.append({
                "id": uid, "obs1": obs1, "obs2": obs2,
                "hyp1": example.text("hyp1"), "hyp2": example.text("hyp2"),
                "label_counts": _counter(row, "label_counter", {"1": "1", "2": "2"}, ANLI),
                "group": text_key("observations", f"{obs1}\n{obs2}"),
            })
        else:
            items.append(_nli_item(
                uid, example.text("premise"), example.text("hypothesis"),
                _counter(row, "label_counter", NLI_SHORT, NLI),
            ))
    return items


def load_snli(root: Path, splits: tuple[str, ...] = ("dev", "test"),
              drop_chaosnli: bool = False):
    drop = set()
    if drop_chaosnli:
        drop = {item["id"] for item in chaosnli_file(root / "chaosnli/chaosNLI_snli.jsonl", False)}
    for split in splits:
        for item in snli_file(root / f"snli/snli_1.0_{split}.jsonl.gz"):
            if item["id"] not in drop:
                yield item


def load_chaosnli(root: Path, subset: str):
    abductive = subset == "alphanli"
    yield from chaosnli_file(root / f"chaosnli/chaosNLI_{subset}.jsonl", abductive)


@file_cache
def varierr_file(path: Path, validated: bool) -> list[dict]:
    items = []
    key = "label_count_round_2" if validated else "label_count_round_1"
    for line, record in read_jsonl(path):
        row = Row(record, path, line)
        counts_row = row.obj(key)
        counts = {label: as_int(counts_row.data.get(label) or 0, counts_row, label, 0, 4)
                  for label in NLI}
        if not sum(counts.values()):
            if validated:  # round 2 removed every label of 2 items: nothing to learn from
                continue
            row.fail(key, "no annotations")
        chaos = row.get("chaosnli_labels", dict, optional=True)
        extra = {"has_ambiguity": bool(row.data.get("has_ambiguity"))}
        if chaos:
            extra["chaosnli_label_counts"] = _counter(row, "chaosnli_labels", NLI_SHORT, NLI)
        items.append(_nli_item(row.text("id"), row.text("context"), row.text("statement"),
                               counts, **extra))
    return items


def load_varierr(root: Path, validated: bool = False):
    yield from varierr_file(root / "varierr-nli/varierr.json", validated)


_SNLI = """SNLI 1.0 {what} (Bowman et al. 2015): premise/hypothesis pairs with the 5 original
annotator labels (4 for a few items); items whose gold label is '-' are kept. Ids are SNLI
pairIDs; group = premise. {note}"""
_CHAOS_NOTE = "All 1,514 ChaosNLI-SNLI items are SNLI dev items (same pair ids): train on "
_CHAOS_NOTE += "'snli-nochaos' or load_source(..., exclude=['chaosnli-snli']) for a ChaosNLI eval."

register("snli-dev", "nli", SNLI_LICENSE, _SNLI.format(what="dev, 10,000 pairs", note=_CHAOS_NOTE),
         load_snli, overlaps=("chaosnli-snli",), splits=("dev",))
register("snli-test", "nli", SNLI_LICENSE, _SNLI.format(what="test, 10,000 pairs", note=""),
         load_snli, splits=("test",))
register("snli", "nli", SNLI_LICENSE,
         _SNLI.format(what="dev + test, 20,000 pairs (the paper's SNLI setting)", note=_CHAOS_NOTE),
         load_snli, overlaps=("chaosnli-snli",))
register("snli-nochaos", "nli", SNLI_LICENSE,
         _SNLI.format(what="dev + test minus the 1,514 ChaosNLI-SNLI pair ids (18,486 pairs)",
                      note="The SNLI training set for a ChaosNLI-SNLI evaluation."),
         load_snli, drop_chaosnli=True)

_CHAOS = """ChaosNLI {what} (Nie et al. 2020): 100 crowd labels per item on items whose 5 original
annotators agreed at most 3/5 (deliberately ambiguous). Ids are the upstream uids. {note}"""
register("chaosnli-snli", "nli", CHAOS_LICENSE,
         _CHAOS.format(what="SNLI dev subset, 1,514 pairs",
                       note="Every item is an SNLI dev item: see snli-nochaos."),
         load_chaosnli, overlaps=("snli-dev", "snli"), subset="snli")
register("chaosnli-mnli", "nli", CHAOS_LICENSE,
         _CHAOS.format(what="MNLI-matched dev subset, 1,599 pairs",
                       note="VariErr-NLI's 500 items are a subset (same ids)."),
         load_chaosnli, overlaps=("varierr-nli", "varierr-nli-validated"), subset="mnli_m")
register("chaosnli-anli", "abductive-nli", CHAOS_LICENSE,
         _CHAOS.format(what="alphaNLI dev subset, 1,532 items",
                       note="Pairwise: which of two hypotheses (label '1' or '2') better explains "
                            "the two observations; swap_pair swaps hyp1/hyp2 and the labels."),
         load_chaosnli, subset="alphanli")

_VARIERR = """VariErr-NLI (Weber-Genzel et al. 2024): 500 ChaosNLI-MNLI items re-annotated by 4
annotators who may each give several labels. label_counts = {what};
'chaosnli_label_counts' holds the item's 100 ChaosNLI labels. Ids == ChaosNLI-MNLI uids."""
register("varierr-nli", "nli", "not stated (research use)",
         _VARIERR.format(what="round-1 labels, one per (annotator, label) pair"),
         load_varierr, overlaps=("chaosnli-mnli",))
register("varierr-nli-validated", "nli", "not stated (research use)",
         _VARIERR.format(what="round-2 labels (those the annotator self-validated as making sense; "
                              "the 2 items left with none are dropped: 498)"),
         load_varierr, overlaps=("chaosnli-mnli",), validated=True)
