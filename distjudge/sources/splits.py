"""Deterministic group-aware splits and seeded annotator subsampling."""

from __future__ import annotations

import hashlib

import numpy as np

from distjudge.data import DataError


def split_key(item: dict) -> str:
    """What a split hashes: the item's ``group`` (its source text) when present, else its id."""
    group = item.get("group")
    return str(group) if group not in (None, "") else str(item["id"])


def _unit(seed: int, key: str) -> float:
    digest = hashlib.sha256(f"{seed}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_items(items: list[dict], test: float = 0.2, seed: int = 0) -> tuple[list, list]:
    """``(train, test)``: an item goes to test when the hash of (seed, group or id) < ``test``.

    Deterministic for a seed and independent of item order; every item of a group lands on the
    same side. The test share is ``test`` in expectation (over groups, not exactly).
    """
    if not 0 <= test <= 1:
        raise ValueError(f"test fraction must be within [0, 1], got {test}")
    train, held = [], []
    for item in items:
        (held if _unit(seed, split_key(item)) < test else train).append(item)
    return train, held


def item_counts(item: dict, where: str = "item") -> dict:
    """An item's {label: count} from ``label_counts`` or an ``annotations`` list, checked."""
    if "label_counts" in item:
        raw = item["label_counts"]
        if not isinstance(raw, dict):
            raise DataError(f"{where}: field 'label_counts': expected a mapping label -> count")
        for label, count in raw.items():
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise DataError(f"{where}: field 'label_counts': count for {label!r} must be a "
                                f"non-negative integer, got {count!r}")
        return dict(raw)
    if "annotations" in item:
        if not isinstance(item["annotations"], list):
            raise DataError(f"{where}: field 'annotations': expected a list of labels")
        counts: dict = {}
        for label in item["annotations"]:
            counts[label] = counts.get(label, 0) + 1
        return counts
    raise DataError(f"{where}: field 'label_counts': missing (or give 'annotations')")


def _item_rng(seed: int, item_id: str) -> np.random.Generator:
    digest = hashlib.sha256(str(item_id).encode()).digest()
    return np.random.default_rng([seed, int.from_bytes(digest[:8], "big")])


def subsample_annotations(items: list[dict], k: int, seed: int = 0) -> list[dict]:
    """Each item with ``k`` of its annotations drawn without replacement (items with <= k keep all).

    The draw for an item depends only on (seed, item id), not on the other items. An
    ``annotations`` list is subsampled as a list; ``label_counts`` are drawn as the annotators'
    label multiset (multivariate hypergeometric) and keep every label key (zeros included).
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    out = []
    for i, item in enumerate(items):
        where = f"item {item.get('id', i)!r}"
        new = dict(item)
        new.pop("counts", None)  # a validated count vector would be stale
        rng = _item_rng(seed, item.get("id", i))
        if "label_counts" not in item and isinstance(item.get("annotations"), list):
            values = item["annotations"]
            if len(values) > k:
                keep = np.sort(rng.choice(len(values), size=k, replace=False))
                new["annotations"] = [values[j] for j in keep]
        else:
            counts = item_counts(item, where)
            total = sum(counts.values())
            if total > k:
                drawn = rng.multivariate_hypergeometric(list(counts.values()), k)
                new["label_counts"] = {label: int(c) for label, c in zip(counts, drawn)}
        out.append(new)
    return out
