"""Adversarial target distribution (paper section 1.3; Chen et al., arXiv 2505.12301).

The paper perturbs the human label distribution p, not the input: the training target is
p' = argmax KL(p' || q) over E = simplex ∩ {||p' - p||_2 <= eps}, found by a few steps of
projected gradient ascent with the model distribution q held fixed. The paper solves each
projection, a small QCQP, with CVXPY item by item, which cost +21% training time (1.21x). Here
the projection is exact and batched in torch: a closed-form solve of the KKT conditions on the
active support, safeguarded by bisection, with no per-item solver call and no python loop over
items. Everything runs in float64 and returns the input dtype.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from distjudge.objective import kl_divergence

__all__ = ["LOG_FLOOR", "adversarial_target", "project_simplex_ball"]

LOG_FLOOR: float = math.log(1e-12)
"""Floor on log p' and log q in the PGD gradient: keeps it finite where p' = 0 or q = 0."""

_MAX_ITER = 100  # cap on bracket updates; random and tie-heavy stress tests needed <= 14
_NEWTON_ONLY = 8  # after this many iterations, every other trial point is a plain bisection


def _project_simplex(y: Tensor) -> tuple[Tensor, Tensor]:
    """Sort-based exact projection of each row onto the simplex (Duchi et al., 2008).

    Returns ``(x, tau)`` with ``x = max(y - tau, 0)``; ``tau`` has shape [B, 1].
    """
    u = torch.sort(y, dim=-1, descending=True).values
    css = u.cumsum(dim=-1) - 1.0
    k = torch.arange(1, y.shape[-1] + 1, dtype=y.dtype, device=y.device)
    rho = (u - css / k > 0).sum(dim=-1, keepdim=True)  # >= 1: the k = 1 test is always true
    tau = css.gather(-1, rho - 1) / rho
    return (y - tau).clamp_min(0.0), tau


def _piece_solve(
    center: Tensor, direction: Tensor, support: Tensor, radius_sq: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Exact root of ||x(t) - center|| = radius assuming the simplex support of x(t) is known.

    With ``y(t) = center + t * direction`` and support S (k labels), x(t) is ``y - tau`` on S and
    0 off S, and ``||x(t) - center||^2 = A t^2 + K`` with A, K depending on S only, so
    ``t = sqrt((radius^2 - K) / A)``. Returns ``(t, x, ok)``: ``ok`` certifies the guess, i.e.
    t is in [0, 1] and S really is the support of the simplex projection of y(t) (KKT).
    """
    m = support.to(center.dtype)
    k = m.sum(dim=-1, keepdim=True)
    a = m * (direction - (m * direction).sum(dim=-1, keepdim=True) / k)
    b = (1.0 - (m * center).sum(dim=-1, keepdim=True)) / k
    quad = (a * a).sum(dim=-1, keepdim=True)
    const = k * b * b + ((1.0 - m) * center * center).sum(dim=-1, keepdim=True)
    t = torch.sqrt((radius_sq - const) / quad)  # NaN/inf when this support has no root
    y = center + t * direction
    tau = ((m * y).sum(dim=-1, keepdim=True) - 1.0) / k
    z = y - tau
    tol = 1e-12 * (1.0 + y.abs().amax(dim=-1, keepdim=True))
    kkt = torch.where(support, z >= -tol, z <= tol).all(dim=-1, keepdim=True)
    ok = (torch.isfinite(t) & (t <= 1.0) & kkt).squeeze(-1)
    x = torch.where(support, z.clamp_min(0.0), torch.zeros_like(z))
    return t, x, ok


def _project_active(v: Tensor, center: Tensor, radius_sq: float, x1: Tensor) -> Tensor:
    """Projection for rows whose plain simplex projection ``x1`` lies outside the ball."""
    out = torch.empty_like(v)
    rows = torch.arange(v.shape[0], device=v.device)  # rows not certified yet
    direction = v - center
    lo = torch.zeros_like(v[:, :1])  # ||x(lo) - c|| <= r
    hi = torch.ones_like(lo)  # ||x(hi) - c|| > r
    support = x1 > 0
    for it in range(_MAX_ITER):
        t_new, x_new, ok = _piece_solve(center, direction, support, radius_sq)
        out[rows[ok]] = x_new[ok]
        keep = ~ok
        if not bool(keep.any()):
            return out
        rows, center, direction = rows[keep], center[keep], direction[keep]
        lo, hi, t_new = lo[keep], hi[keep], t_new[keep]
        # Next trial: the piece root when it falls inside the bracket, else the midpoint; late
        # iterations alternate with plain bisection so the bracket is sure to shrink.
        inside = torch.isfinite(t_new) & (t_new > lo) & (t_new < hi)
        if it >= _NEWTON_ONLY and it % 2 == 1:
            inside = torch.zeros_like(inside)
        t_try = torch.where(inside, t_new, 0.5 * (lo + hi))
        y_try = center + t_try * direction
        x_try, tau_try = _project_simplex(y_try)
        above = ((x_try - center) ** 2).sum(dim=-1, keepdim=True) > radius_sq
        hi = torch.where(above, t_try, hi)
        lo = torch.where(above, lo, t_try)
        support = y_try > tau_try
    # Not certified within the cap: the feasible end of a bracket narrower than 2^-45.
    out[rows] = _project_simplex(center + lo * direction)[0]
    return out


def project_simplex_ball(v: Tensor, center: Tensor, radius: float) -> Tensor:
    """Exact Euclidean projection of each row of v onto simplex ∩ {x : ||x - center||_2 <= radius}.

    By the KKT conditions, the solution is ``x(λ) = Π((v + λ center) / (1 + λ))`` with Π the
    simplex projection and λ >= 0 the multiplier of the ball. With ``t = 1 / (1 + λ)`` this is
    ``x(t) = Π(center + t (v - center))``, whose distance to ``center`` is nondecreasing in t.
    If ``Π(v)`` (t = 1) is inside the ball it is the answer; otherwise x(t) is piecewise linear
    in t and ``||x(t) - center||^2 = A t^2 + K`` on each piece of constant support, so the root
    is solved in closed form for a candidate support and accepted only when the KKT conditions
    of that support hold (a certificate of optimality). Candidate supports come from a bracket
    on t refined by Newton-like piece roots with a bisection fallback, batched over rows.

    Args:
        v: points to project [B, C].
        center: ball centre in the simplex, [B, C] or broadcastable to it (e.g. [C]).
        radius: ball radius >= 0; 0 returns ``center``, >= sqrt(2) the plain simplex projection.

    Returns:
        Projections [B, C] in the dtype of ``v`` (computed in float64).
    """
    if not radius >= 0.0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    out_dtype = v.dtype
    v64 = v.detach().to(torch.float64)
    c64 = center.detach().to(torch.float64).expand_as(v64)
    if radius == 0.0:
        return c64.clone().to(out_dtype)
    radius_sq = float(radius) ** 2
    flat_v, flat_c = v64.reshape(-1, v64.shape[-1]), c64.reshape(-1, v64.shape[-1])
    x1 = _project_simplex(flat_v)[0]
    active = ((x1 - flat_c) ** 2).sum(dim=-1) > radius_sq
    if bool(active.any()):
        rows = active.nonzero().squeeze(-1)
        x1[rows] = _project_active(flat_v[rows], flat_c[rows], radius_sq, x1[rows])
    return x1.reshape(v64.shape).to(out_dtype)


def adversarial_target(
    p: Tensor,
    log_q: Tensor,
    epsilon: float = 0.25,
    steps: int = 5,
    step_size: float = 0.05,
) -> Tensor:
    """Adversarial target p' ≈ argmax KL(p' || q) over simplex ∩ ℓ2 ball(p, epsilon).

    Projected gradient ascent with q fixed (``log_q`` is detached): ``p⁽⁰⁾ = p`` and
    ``p⁽ᵗ⁺¹⁾ = Π(p⁽ᵗ⁾ + step_size * (log p⁽ᵗ⁾ + 1 - log q))``, Π = :func:`project_simplex_ball`.

    Zeros: the exact gradient is -inf where p' = 0 (and +inf where q = 0), so log p' and log q
    are clamped at ``LOG_FLOOR = log(1e-12)``. The gradient stays finite, and a label with
    p' = 0 still gets a strongly negative component (about -26.6 - log q), so the ascent keeps
    mass off it, as the true gradient does; where q < 1e-12 too, the two floors cancel. Hence,
    as with the exact gradient, a one-hot p (unanimous annotators) is a fixed point of the PGD
    unless q puts less than 1e-12 times q[majority] on another label.

    Rows where the finite-step PGD ended with a lower KL than p are reset to p, so
    ``KL(p' || q) >= KL(p || q)`` always holds. ``epsilon = 0`` or ``steps = 0`` returns a copy
    of p. The result is detached and has the dtype of p.

    Args:
        p: human target distributions [B, C] (rows in the simplex).
        log_q: model log-probabilities over the labels [B, C].
        epsilon: ball radius (paper: 0.25 with alpha = 0.8).
        steps: number of ascent steps (paper: 5).
        step_size: ascent step size η (paper: 0.05).
    """
    if epsilon < 0.0 or steps < 0 or step_size < 0.0:
        raise ValueError(
            f"need epsilon >= 0, steps >= 0, step_size >= 0; got {epsilon}, {steps}, {step_size}"
        )
    if p.shape != log_q.shape:
        raise ValueError(f"p and log_q shapes differ: {tuple(p.shape)} vs {tuple(log_q.shape)}")
    if epsilon == 0.0 or steps == 0:
        return p.detach().clone()
    with torch.no_grad():
        p64 = p.detach().to(torch.float64)
        lq = log_q.detach().to(torch.float64)
        lq_floor = lq.clamp_min(LOG_FLOOR)
        x = p64
        for _ in range(steps):
            grad = torch.log(x).clamp_min(LOG_FLOOR) + 1.0 - lq_floor
            x = project_simplex_ball(x + step_size * grad, p64, epsilon)
        better = kl_divergence(x, lq) >= kl_divergence(p64, lq)
        x = torch.where(better.unsqueeze(-1), x, p64)
    return x.to(p.dtype)
