"""Distributional training objective (paper sections 1.2-1.3, arXiv 2505.12301).

The judge is trained to match the whole human label distribution p, not just its majority vote.
The loss mixes the forward KL divergence KL(p || q) between the human distribution p and the
model's label distribution q with an auxiliary cross-entropy on the majority label:
``L = alpha * KL(p || q) + (1 - alpha) * CE(majority(p), q)``. ``alpha = 0`` is the single-point
(majority-vote SFT) baseline, ``alpha = 1`` is pure KL, and the paper's best is ``alpha = 0.8``.
Every function here takes per-item label distributions (batch first, labels last); reading
``log_q`` at the single answer-token position, and masking everything else, is the caller's job.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "distributional_loss",
    "kl_divergence",
    "majority_cross_entropy",
    "majority_label",
]


def kl_divergence(p: Tensor, log_q: Tensor) -> Tensor:
    """Per-row KL(p || q) = sum_i p_i (log p_i - log q_i), computed in log space.

    Args:
        p: target distributions [B, C]; rows sum to 1 and may contain exact zeros.
        log_q: model log-probabilities over the C labels [B, C]; may contain ``-inf``.

    Returns:
        KL per row [B]. Terms with ``p_i = 0`` contribute exactly 0 (``0 log 0 = 0`` and
        ``0 * log q = 0`` even for ``log q = -inf``), so there is no NaN in the value or in the
        gradient; a row with ``p_i > 0`` and ``q_i = 0`` gives ``+inf``.
    """
    pos = p > 0
    # Double-where: feed only safe values to log/sub so backward never sees 0 * inf.
    p_safe = torch.where(pos, p, torch.ones_like(p))
    log_q_safe = torch.where(pos, log_q, torch.zeros_like(log_q))
    terms = torch.where(pos, p * (torch.log(p_safe) - log_q_safe), torch.zeros_like(p))
    return terms.sum(dim=-1)


def majority_label(p: Tensor) -> Tensor:
    """Majority-vote label r(x) = argmax_i p_i per row [B].

    Tie rule: when several labels share the maximal probability (exact equality), the one with
    the LOWEST label index wins, i.e. the first in the task's label order.
    """
    num_labels = p.shape[-1]
    is_max = p == p.max(dim=-1, keepdim=True).values
    index = torch.arange(num_labels, device=p.device).expand_as(p)
    return torch.where(is_max, index, torch.full_like(index, num_labels)).min(dim=-1).values


def majority_cross_entropy(p: Tensor, log_q: Tensor) -> Tensor:
    """Per-row cross-entropy against the majority label: ``-log q[majority_label(p)]`` [B]."""
    target = majority_label(p).unsqueeze(-1)
    return -log_q.gather(dim=-1, index=target).squeeze(-1)


def distributional_loss(p: Tensor, log_q: Tensor, alpha: float = 0.8) -> Tensor:
    """Batch-mean hybrid loss ``alpha * KL(p || q) + (1 - alpha) * CE(majority(p), q)``.

    ``alpha = 0`` is the single-point CE baseline and ``alpha = 1`` pure KL. A term whose weight
    is 0 is not evaluated, so an infinite value in it cannot turn the loss into NaN.

    Raises:
        ValueError: if ``alpha`` is not in [0, 1].
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(
            f"alpha must be in [0, 1] (0 = majority CE only, 1 = KL only); got {alpha}"
        )
    loss = torch.zeros((), dtype=log_q.dtype, device=log_q.device)
    if alpha > 0.0:
        loss = loss + alpha * kl_divergence(p, log_q).mean()
    if alpha < 1.0:
        loss = loss + (1.0 - alpha) * majority_cross_entropy(p, log_q).mean()
    return loss
