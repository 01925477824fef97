"""Distribution metrics, registered by name: pure functions of the human p and the model q.

``p`` and ``q`` are arrays [N, C] whose rows sum to 1. Conventions:

- KL(p‖q) = Σ p log(p/q) in nats with 0·log 0 = 0; q is floored at ``Q_FLOOR`` so that a label
  the model gives exactly zero mass yields a large finite KL instead of inf.
- JSD is the Jensen-Shannon *divergence* in nats (scipy's ``jensenshannon`` is its square root).
- Accuracy: argmax q equals the majority label of p. When several labels tie for the majority,
  a prediction of any of them counts as correct (the humans are split between them).
- ECE: confidence = max q, correctness as for accuracy, ``ECE_BINS`` equal-width bins.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Q_FLOOR = 1e-12
ECE_BINS = 10


def _xlogy_ratio(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    q = np.maximum(q, Q_FLOOR)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * (np.log(np.where(p > 0, p, 1.0)) - np.log(q)), 0.0)
    return terms.sum(axis=-1)


def kl_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """KL(p‖q) per row, nats."""
    return _xlogy_ratio(np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64))


def js_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen-Shannon divergence per row, nats (bounded by log 2)."""
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    m = (p + q) / 2
    return (_xlogy_ratio(p, m) + _xlogy_ratio(q, m)) / 2


def total_variation(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Total variation distance per row: half the L1 distance."""
    return 0.5 * np.abs(np.asarray(p, np.float64) - np.asarray(q, np.float64)).sum(axis=-1)


def entropy(p: np.ndarray) -> np.ndarray:
    """Shannon entropy per row, nats, with 0·log 0 = 0."""
    p = np.asarray(p, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0).sum(axis=-1)


def majority_correct(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """1.0 where argmax q is one of p's (possibly tied) majority labels."""
    p = np.asarray(p, dtype=np.float64)
    pred = np.asarray(q).argmax(axis=-1)
    top = p.max(axis=-1, keepdims=True)
    return np.isclose(p[np.arange(len(p)), pred], top[:, 0], rtol=0, atol=1e-12).astype(float)


def calibration_bins(p: np.ndarray, q: np.ndarray, bins: int = ECE_BINS
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width bin of confidence (max q): item count, mean confidence, accuracy.

    Empty bins have count 0 and mean confidence and accuracy 0.
    """
    conf = np.asarray(q, dtype=np.float64).max(axis=-1)
    which = np.minimum((conf * bins).astype(int), bins - 1)
    n = np.bincount(which, minlength=bins)
    per_item = np.maximum(n, 1)
    return (n, np.bincount(which, conf, bins) / per_item,
            np.bincount(which, majority_correct(p, q), bins) / per_item)


def expected_calibration_error(p: np.ndarray, q: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE of the judge's top-label confidence against majority correctness."""
    n, conf, acc = calibration_bins(p, q, bins)
    return float((n * np.abs(conf - acc)).sum() / max(n.sum(), 1))


# Row-wise metrics are averaged over items; set-level ones are computed on the whole set.
ROW_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "kl": kl_divergence,
    "jsd": js_divergence,
    "tv": total_variation,
    "accuracy": majority_correct,
}
SET_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "ece": expected_calibration_error,
}
METRICS = (*ROW_METRICS, *SET_METRICS)


def score(p: np.ndarray, q: np.ndarray) -> dict[str, float]:
    """Every registered metric of q against p (row metrics averaged)."""
    out = {name: float(fn(p, q).mean()) for name, fn in ROW_METRICS.items()}
    out.update({name: fn(p, q) for name, fn in SET_METRICS.items()})
    return out


def bootstrap_scores(
    p: np.ndarray, q: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, dict[str, float]]:
    """Each metric's value with a percentile bootstrap CI over items: {name: {value, low, high}}."""
    p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(p), size=(n_boot, len(p)))
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    out = {}
    for name, fn in ROW_METRICS.items():
        rows = fn(p, q)
        boots = rows[idx].mean(axis=1)
        out[name] = {"value": float(rows.mean()), "low": float(np.percentile(boots, lo)),
                     "high": float(np.percentile(boots, hi))}
    for name, fn in SET_METRICS.items():
        boots = np.array([fn(p[i], q[i]) for i in idx])
        out[name] = {"value": fn(p, q), "low": float(np.percentile(boots, lo)),
                     "high": float(np.percentile(boots, hi))}
    return out
