"""Per-source statistics: annotator counts, label totals, entropy, human ceiling, baselines.

Human split-half ceiling (items with >= 4 annotations): the item's annotations are shuffled
(seeded) and cut into half A (floor(n/2) annotations) and half B (the rest); A plays the human
target p and B the "model" q, and the divergence is averaged over ``repeats`` random cuts, then
over items. Three numbers, because a half often lacks a label the other half has:

- ``ceiling_kl``: KL(p_A || q_B) with q_B add-1/2 smoothed, q_B = (c_B + 1/2) / (n_B + C/2)
  (the Jeffreys estimate: a predictor built from B's annotators that never claims a label is
  impossible). This is the headline human ceiling.
- ``ceiling_kl_raw``: KL(p_A || p_B) with :func:`distjudge.metrics.kl_divergence` as is (q floored
  at 1e-12): a label missing from B costs p_A * 27.6 nats, so this is large on small halves.
- ``ceiling_jsd``: Jensen-Shannon divergence of p_A and p_B (symmetric, bounded by log 2, no
  smoothing needed).

Each is a noisy split of n/2 against n/2 annotators, so it is pessimistic for a model judged
against all n; compare models with it across sources rather than read it as a hard bound.
Baselines: ``uniform_kl`` = mean KL(p || uniform); ``prior_kl`` = mean KL(p || prior) with the
prior the mean of the items' distributions (in-sample, hence slightly optimistic).
All values in nats.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from distjudge.data import validate_record
from distjudge.metrics import entropy, js_divergence, kl_divergence
from distjudge.task import Task, load_task


def count_matrix(items: list[dict], task: Task) -> np.ndarray:
    """Label counts [N, C] in the task's label order (every item validated)."""
    rows = [validate_record(item, task, f"item {item.get('id', i)!r}", True)["counts"]
            for i, item in enumerate(items)]
    return np.stack(rows).astype(np.int64)


def split_half(counts: np.ndarray, rng: np.random.Generator, repeats: int) -> dict:
    """Mean split-half divergences over the rows of ``counts`` (all rows must have n >= 2)."""
    n_labels = counts.shape[1]
    totals = counts.sum(axis=1)
    sums = {"kl": 0.0, "kl_raw": 0.0, "jsd": 0.0}
    for n in np.unique(totals):
        block = counts[totals == n]
        labels = np.stack([np.repeat(np.arange(n_labels), row) for row in block])  # [R, n]
        order = np.argsort(rng.random((len(block), repeats, n)), axis=-1)
        half = n // 2
        picked = np.take_along_axis(labels[:, None, :], order[..., :half], axis=-1)
        count_a = (picked[..., None] == np.arange(n_labels)).sum(axis=-2)  # [R, repeats, C]
        count_b = block[:, None, :] - count_a
        p_a, p_b = count_a / half, count_b / (n - half)
        smooth_b = (count_b + 0.5) / (n - half + 0.5 * n_labels)
        sums["kl"] += kl_divergence(p_a, smooth_b).mean(axis=1).sum()
        sums["kl_raw"] += kl_divergence(p_a, p_b).mean(axis=1).sum()
        sums["jsd"] += js_divergence(p_a, p_b).mean(axis=1).sum()
    return {key: float(value / len(counts)) for key, value in sums.items()}


def source_stats(items: list[dict], task: Task | str, seed: int = 0, repeats: int = 10,
                 min_annotators: int = 4) -> dict:
    """Statistics of one item list (see the module docstring for the definitions)."""
    task = load_task(task)
    counts = count_matrix(items, task)
    totals = counts.sum(axis=1)
    p = counts / totals[:, None]
    n_labels = len(task.labels)
    prior = p.mean(axis=0)
    out = {
        "items": len(items),
        "annotators_mean": float(totals.mean()),
        "annotators_min": int(totals.min()),
        "annotators_max": int(totals.max()),
        "annotators_histogram": {int(k): v for k, v in sorted(Counter(totals.tolist()).items())},
        "label_totals": dict(zip(task.label_names, counts.sum(axis=0).tolist())),
        "entropy": float(entropy(p).mean()),
        "uniform_kl": float(kl_divergence(p, np.full(n_labels, 1 / n_labels)).mean()),
        "prior_kl": float(kl_divergence(p, prior).mean()),
        "prior": dict(zip(task.label_names, prior.round(4).tolist())),
    }
    enough = totals >= max(min_annotators, 2)
    out["ceiling_items"] = int(enough.sum())
    ceiling = (split_half(counts[enough], np.random.default_rng(seed), repeats) if enough.any()
               else dict.fromkeys(("kl", "kl_raw", "jsd"), float("nan")))
    out.update({f"ceiling_{key}": value for key, value in ceiling.items()})
    return out


def _range(stats: dict) -> str:
    low, high = stats["annotators_min"], stats["annotators_max"]
    return str(low) if low == high else f"{low}-{high}"


COLUMNS = (  # (header, stats key or callable, format)
    ("source", "name", "{}"), ("task", "task", "{}"), ("items", "items", "{:,}"),
    ("ann/item", lambda s: f"{s['annotators_mean']:.1f} [{_range(s)}]", "{}"),
    ("H", "entropy", "{:.3f}"), ("n>=4", "ceiling_items", "{:,}"),
    ("ceil KL", "ceiling_kl", "{:.3f}"), ("ceil KLraw", "ceiling_kl_raw", "{:.3f}"),
    ("ceil JSD", "ceiling_jsd", "{:.3f}"), ("unif KL", "uniform_kl", "{:.3f}"),
    ("prior KL", "prior_kl", "{:.3f}"),
)


def format_table(rows: list[dict], columns=COLUMNS) -> str:
    """A plain-text table (right-aligned numbers) of stats rows with ``name`` and ``task``."""
    cells = [[header for header, _, _ in columns]]
    for row in rows:
        line = []
        for _, key, fmt in columns:
            value = key(row) if callable(key) else row.get(key)
            is_nan = isinstance(value, float) and np.isnan(value)
            line.append("-" if value is None or is_nan else fmt.format(value))
        cells.append(line)
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = []
    for r in cells:
        parts = [c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)
