"""How far the judge's distributions are from the humans', beside trivial baselines.

``evaluate(p, q)`` scores arrays; ``evaluate_file`` reads a judged file (rows with human labels
and a ``distribution``). Every metric of :mod:`distjudge.metrics` comes with a bootstrap 95% CI,
for the judge and, on the same items, for the uniform distribution and (given a reference set)
the reference set's label prior.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from distjudge.data import DataError, iter_records, label_lookup, load_items, validate_record
from distjudge.metrics import METRICS, bootstrap_scores, entropy
from distjudge.task import Task, load_task


def label_prior(p: np.ndarray) -> np.ndarray:
    """Mean human distribution of a reference set."""
    return np.asarray(p, dtype=np.float64).mean(axis=0)


def apply_temperature(q: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log q / T) per row: T > 1 flattens the judge's distributions, T < 1 sharpens."""
    z = np.log(np.maximum(np.asarray(q, np.float64), 1e-300)) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_temperature(p: np.ndarray, q: np.ndarray, low: float = 0.01, high: float = 100.0,
                    tol: float = 1e-6) -> float:
    """The temperature T minimizing mean KL(p ‖ softmax(log q / T)) over a reference set.

    The loss is convex in β = 1/T (cross-entropy of a log-sum-exp), so a golden-section search
    over β in [1/high, 1/low] finds its minimum. It is computed in log space: through
    probabilities, a sharp β underflows q to the KL floor, the loss flattens there, and the
    search can walk into that plateau (it once fitted T = 0.01 where T = 100 was best).
    """
    p = np.asarray(p, np.float64)
    log_q = np.log(np.maximum(np.asarray(q, np.float64), 1e-300))
    neg_entropy = -entropy(p)  # Σ p log p per row

    def loss(beta: float) -> float:  # mean KL(p ‖ softmax(β log q)), 0 · log 0 = 0
        z = beta * log_q
        top = z.max(axis=1, keepdims=True)
        log_q_beta = z - top - np.log(np.exp(z - top).sum(axis=1, keepdims=True))
        cross = np.where(p > 0, p * log_q_beta, 0.0).sum(-1)
        return float((neg_entropy - cross).mean())

    a, b = 1 / high, 1 / low
    ratio = (np.sqrt(5) - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = loss(c), loss(d)
    while b - a > tol * max(1.0, a):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = loss(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = loss(d)
    return float(2 / (a + b))


def evaluate(p: np.ndarray, q: np.ndarray, prior: np.ndarray | None = None,
             n_boot: int = 1000, seed: int = 0) -> dict:
    """Metrics of the judge ``q`` against humans ``p`` (both [N, C]) and of the baselines."""
    p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
    if p.shape != q.shape or p.ndim != 2:
        raise ValueError(f"p and q must both be [N, C], got {p.shape} and {q.shape}")
    report = {"n": len(p), "judge": bootstrap_scores(p, q, n_boot, seed)}
    report["uniform"] = bootstrap_scores(p, np.full_like(p, 1 / p.shape[1]), n_boot, seed)
    if prior is not None:
        report["prior"] = bootstrap_scores(p, np.broadcast_to(prior, p.shape), n_boot, seed)
    return report


def read_judged(path: str | Path, task: Task) -> tuple[np.ndarray, np.ndarray, dict]:
    """Human ``p``, judge ``q`` and skipped-row counts (unlabeled, unscored) of a judged file."""
    lookup = label_lookup(task)
    p_rows, q_rows, masses, unlabeled, unscored = [], [], [], 0, 0
    for line, record in iter_records(path):
        where = f"{path}:{line}"
        item = validate_record(record, task, where, require_labels=False, lookup=lookup)
        if record.get("scored") is False:  # served backend: no label in the top-k
            unscored += 1
            continue
        q = _distribution(record, task, where)
        if "label_mass" in record:
            if not _is_number(record["label_mass"]):
                raise DataError(f"{where}: field 'label_mass': not a number")
            masses.append(float(record["label_mass"]))
        if item["counts"] is None:
            unlabeled += 1
            continue
        p_rows.append(item["counts"] / item["counts"].sum())
        q_rows.append(q)
    if not p_rows:
        raise DataError(f"{path}: no judged items with human labels to evaluate")
    info = {"unlabeled": unlabeled, "unscored": unscored,
            "mean_label_mass": float(np.mean(masses)) if masses else None}
    return np.stack(p_rows), np.stack(q_rows), info


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _distribution(record: dict, task: Task, where: str) -> np.ndarray:
    dist = record.get("distribution")
    if dist is None:
        raise DataError(f"{where}: field 'distribution': missing (judge the file first)")
    if not isinstance(dist, dict):
        raise DataError(f"{where}: field 'distribution': expected a mapping label -> probability")
    missing = [name for name in task.label_names if name not in dist]
    if missing:
        raise DataError(f"{where}: field 'distribution': no probability for {missing}")
    for name in task.label_names:
        if not _is_number(dist[name]):
            raise DataError(f"{where}: field 'distribution': value for {name!r} is not a number")
    q = np.array([dist[name] for name in task.label_names], dtype=np.float64)
    if not np.all(np.isfinite(q)) or q.min() < 0 or abs(q.sum() - 1) > 1e-4:
        raise DataError(f"{where}: field 'distribution': not a probability distribution")
    return q / q.sum()


def evaluate_file(path: str | Path, task: str | Task, reference: str | Path | None = None,
                  n_boot: int = 1000, seed: int = 0, plot: str | Path | None = None) -> dict:
    """Evaluate a judged file; ``reference`` (a labelled file) supplies the label prior.

    ``plot``: also save a PNG (reliability diagram, human vs judge entropy) there.
    """
    task = load_task(task)
    p, q, info = read_judged(path, task)
    prior = None
    if reference is not None:
        ref = load_items(reference, task, require_labels=True)
        prior = label_prior(np.stack([i["counts"] / i["counts"].sum() for i in ref]))
    report = evaluate(p, q, prior, n_boot, seed)
    if plot is not None:
        from distjudge.plots import plot_evaluation

        plot_evaluation(p, q, plot, title=f"{task.name}: {len(p)} items ({Path(path).name})")
    report.update(task=task.name, labels=task.label_names, input=str(path), **info)
    if prior is not None:
        report["prior_distribution"] = dict(zip(task.label_names, prior.tolist()))
    return report


def format_report(report: dict) -> str:
    """A plain-text table: one row per metric, one column per method, value [95% CI]."""
    methods = [m for m in ("judge", "uniform", "prior") if m in report]
    lines = [f"{report.get('task', '')}: {report['n']} items with human labels"
             + (f", {report['unlabeled']} without (skipped)" if report.get("unlabeled") else "")
             + (f"; {report['unscored']} unscored by the judge (skipped)"
                if report.get("unscored") else "")]
    if report.get("mean_label_mass") is not None:
        lines.append(f"mean label mass of the judge: {report['mean_label_mass']:.4f}")
    lines.append(f"{'metric':<10}" + "".join(f"{m:>28}" for m in methods))
    for metric in METRICS:
        cells = []
        for m in methods:
            s = report[m][metric]
            cells.append(f"{s['value']:.4f} [{s['low']:.4f}, {s['high']:.4f}]".rjust(28))
        lines.append(f"{metric:<10}" + "".join(cells))
    return "\n".join(lines)
