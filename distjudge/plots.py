"""Pictures of an evaluation: reliability diagram and human vs judge entropy."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from distjudge.metrics import ECE_BINS, calibration_bins, entropy


def plot_evaluation(p: np.ndarray, q: np.ndarray, path: str | Path, title: str = "") -> Path:
    """Save a two-panel PNG: calibration of max q against majority accuracy, and H(p) vs H(q)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts, mean_conf, acc = calibration_bins(p, q)
    filled = counts > 0

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.5))
    left.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect")
    left.bar(mean_conf[filled], acc[filled], width=1 / ECE_BINS * 0.8, alpha=0.7,
             label="judge (bar = bin)")
    left.set(xlim=(0, 1), ylim=(0, 1), xlabel="judge confidence (max q)",
             ylabel="agreement with human majority", title="Reliability diagram")
    left.legend(loc="upper left")

    h_p, h_q = entropy(p), entropy(q)
    top = float(np.log(p.shape[1]))
    right.scatter(h_p, h_q, s=8, alpha=0.5)
    right.plot([0, top], [0, top], color="grey", linestyle="--", linewidth=1)
    right.set(xlim=(0, top), ylim=(0, top), xlabel="human entropy H(p) (nats)",
              ylabel="judge entropy H(q) (nats)", title="Disagreement: humans vs judge")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path
