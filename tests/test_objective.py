"""Tests for distjudge.objective: KL, majority label, majority CE and the hybrid loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import distribution_batches
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import rel_entr
from scipy.stats import entropy

from distjudge.objective import (
    distributional_loss,
    kl_divergence,
    majority_cross_entropy,
    majority_label,
)

F64 = torch.float64




def _log_q_for(p: np.ndarray, seed: int) -> np.ndarray:
    """Random full-support model log-probabilities with the same shape as p."""
    logits = np.random.default_rng(seed).normal(scale=2.0, size=p.shape)
    return torch.log_softmax(torch.tensor(logits, dtype=F64), dim=-1).numpy()


# ---------------------------------------------------------------- kl_divergence


def test_kl_matches_scipy_rel_entr_and_entropy() -> None:
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(5), size=64)
    p[::3, 1] = 0.0  # exact zeros in p
    p /= p.sum(-1, keepdims=True)
    log_q = _log_q_for(p, seed=1)
    q = np.exp(log_q)
    got = kl_divergence(torch.tensor(p), torch.tensor(log_q)).numpy()
    np.testing.assert_allclose(got, rel_entr(p, q).sum(-1), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(got, entropy(p, q, axis=-1), rtol=1e-10, atol=1e-12)


def test_kl_zero_times_minus_inf_is_zero() -> None:
    p = torch.tensor([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]], dtype=F64)
    log_q = torch.tensor(
        [[math.log(0.5), math.log(0.5), -math.inf], [0.0, -math.inf, -math.inf]], dtype=F64
    )
    kl = kl_divergence(p, log_q)
    assert torch.equal(kl, torch.zeros(2, dtype=F64))


def test_kl_is_inf_when_q_misses_mass_of_p() -> None:
    p = torch.tensor([[0.5, 0.5]], dtype=F64)
    log_q = torch.tensor([[0.0, -math.inf]], dtype=F64)
    assert torch.isinf(kl_divergence(p, log_q)).all()


@settings(max_examples=60, deadline=None)
@given(p=distribution_batches(), seed=st.integers(0, 2**16))
def test_kl_properties(p: np.ndarray, seed: int) -> None:
    log_q = _log_q_for(p, seed)
    pt, lqt = torch.tensor(p), torch.tensor(log_q)
    kl = kl_divergence(pt, lqt)
    assert not torch.isnan(kl).any()
    assert (kl >= 0).all()
    # KL = 0 iff p = q: zero at q = p (log 0 = -inf included) and Pinsker's bound elsewhere.
    assert torch.allclose(kl_divergence(pt, torch.log(pt)), torch.zeros_like(kl), atol=1e-12)
    l1 = np.abs(p - np.exp(log_q)).sum(-1)
    assert (kl.numpy() >= 0.5 * l1**2 - 1e-12).all()
    np.testing.assert_allclose(
        kl.numpy(), rel_entr(p, np.exp(log_q)).sum(-1), rtol=1e-9, atol=1e-12
    )


@settings(max_examples=40, deadline=None)
@given(p=distribution_batches())
def test_kl_gradient_finite_with_zeros(p: np.ndarray) -> None:
    pt = torch.tensor(p, requires_grad=True)
    # log q = -inf exactly where p = 0: the worst case for 0 * inf in the backward pass.
    lq = torch.log_softmax(torch.tensor(p) + 1.0, dim=-1).masked_fill(
        torch.tensor(p) == 0, -math.inf
    )
    lq.requires_grad_(True)
    kl_divergence(pt, lq).sum().backward()
    assert torch.isfinite(lq.grad).all()
    assert torch.isfinite(pt.grad).all()
    assert torch.allclose(lq.grad, -pt.detach())  # d KL / d log q = -p


# ---------------------------------------------------------------- majority label and CE


def test_majority_label_ties_go_to_lowest_index() -> None:
    p = torch.tensor(
        [
            [0.4, 0.4, 0.2],
            [0.2, 0.4, 0.4],
            [1 / 3, 1 / 3, 1 / 3],
            [0.0, 0.0, 1.0],
            [0.1, 0.6, 0.3],
        ],
        dtype=F64,
    )
    assert majority_label(p).tolist() == [0, 1, 0, 2, 1]
    assert majority_label(p).dtype == torch.long


@settings(max_examples=40, deadline=None)
@given(p=distribution_batches())
def test_majority_label_matches_numpy_first_argmax(p: np.ndarray) -> None:
    assert majority_label(torch.tensor(p)).tolist() == np.argmax(p, axis=-1).tolist()


def test_majority_cross_entropy_matches_numpy() -> None:
    rng = np.random.default_rng(3)
    p = rng.dirichlet(np.ones(4), size=32)
    p[0] = [0.25, 0.25, 0.25, 0.25]
    log_q = _log_q_for(p, seed=4)
    expected = -np.log(np.exp(log_q)[np.arange(len(p)), np.argmax(p, axis=-1)])
    got = majority_cross_entropy(torch.tensor(p), torch.tensor(log_q)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-12)


# ---------------------------------------------------------------- distributional_loss


@pytest.mark.parametrize("alpha", [0.0, 0.8, 1.0])
def test_distributional_loss_mixture(alpha: float) -> None:
    rng = np.random.default_rng(5)
    p = rng.dirichlet(np.ones(3), size=16)
    log_q = _log_q_for(p, seed=6)
    q = np.exp(log_q)
    kl = rel_entr(p, q).sum(-1).mean()
    ce = -np.log(q[np.arange(len(p)), np.argmax(p, axis=-1)]).mean()
    got = distributional_loss(torch.tensor(p), torch.tensor(log_q), alpha=alpha)
    assert got.shape == ()
    assert got.item() == pytest.approx(alpha * kl + (1 - alpha) * ce, rel=1e-12)


def test_distributional_loss_extremes_are_pure_terms_and_backprop() -> None:
    p = torch.tensor([[0.6, 0.4, 0.0], [0.2, 0.2, 0.6]], dtype=F64)
    logits = torch.tensor([[1.0, 0.0, -1.0], [0.0, 0.5, 0.2]], dtype=F64, requires_grad=True)
    log_q = torch.log_softmax(logits, dim=-1)
    assert torch.equal(distributional_loss(p, log_q, 0.0), majority_cross_entropy(p, log_q).mean())
    assert torch.equal(distributional_loss(p, log_q, 1.0), kl_divergence(p, log_q).mean())
    distributional_loss(p, log_q, 0.8).backward()
    assert torch.isfinite(logits.grad).all()


def test_distributional_loss_zero_weight_term_cannot_make_nan() -> None:
    p = torch.tensor([[0.5, 0.5, 0.0]], dtype=F64)
    log_q = torch.tensor([[0.0, -math.inf, -math.inf]], dtype=F64)  # KL = inf, CE = 0
    assert distributional_loss(p, log_q, 0.0).item() == 0.0


@pytest.mark.parametrize("alpha", [-0.1, 1.5, math.nan])
def test_distributional_loss_rejects_bad_alpha(alpha: float) -> None:
    p = torch.tensor([[0.5, 0.5]], dtype=F64)
    with pytest.raises(ValueError, match="alpha"):
        distributional_loss(p, torch.log(p), alpha=alpha)
