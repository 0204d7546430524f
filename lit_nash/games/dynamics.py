"""Closed-form tabular operators of ALGORITHMS.md §2.1 / §4, in log-space and batched.

Every function takes log-policies ``l`` of shape (..., K) (logits; any additive constant is
allowed) and win-rate vectors ``g = P @ pi_opponent`` of the same shape, and returns new logits
normalized to log-probabilities. Leading dimensions are independent games (or prompts), so one call
advances thousands of games at once, on whatever device the tensors live on.

The algorithms in ``lit_nash.algorithms`` compose these operators; ``lit_nash.algorithms.simulate`` runs
any algorithm's exact dynamics on a batch of matrix games.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

Operator = Callable[[Tensor, Tensor], Tensor]


def normalize(l: Tensor) -> Tensor:
    """Log-probabilities from logits (log-softmax over the last dimension)."""
    return torch.log_softmax(l, dim=-1)


def win_rates(P: Tensor, log_pi: Tensor) -> Tensor:
    """g = P·π: the probability that each response beats a draw from π, batched."""
    return (P @ log_pi.exp().unsqueeze(-1)).squeeze(-1)


def mwu(l: Tensor, g: Tensor, eta: float) -> Tensor:
    """Multiplicative weights / Hedge: l' = l + η·g (SPPO, Iter-IPO in exact form)."""
    return normalize(l + eta * g)


def omd(l: Tensor, g: Tensor, eta: float, tau: float, log_mu: Tensor) -> Tensor:
    """Mirror descent with a linearized KL to μ: l' = (1−ητ)·l + ητ·log μ + η·g (INPO, online IPO, EGPO)."""
    a = eta * tau
    return normalize((1.0 - a) * l + a * log_mu + eta * g)


def prox(l: Tensor, g: Tensor, eta: float, tau: float, log_mu: Tensor) -> Tensor:
    """Exact prox / magnetic mirror descent: l' = (l + ητ·log μ + η·g) / (1+ητ) (MMD, MPO, Nash-MP)."""
    a = eta * tau
    return normalize((l + a * log_mu + eta * g) / (1.0 + a))


def geometric_mixture(l: Tensor, log_mu: Tensor, alpha: float) -> Tensor:
    """mix_α(π, μ) ∝ π^(1−α)·μ^α (Nash-MD's opponent; token-wise on logits for LMs)."""
    return normalize((1.0 - alpha) * l + alpha * log_mu)


def history_mixture(history: Tensor, weights: Tensor) -> Tensor:
    """Weighted log-mixture Σ_j λ_j·l_j of past iterates, history of shape (H, ..., K) (MNPO's anchor)."""
    w = torch.as_tensor(weights, dtype=history.dtype, device=history.device)
    return normalize(torch.tensordot(w, history, dims=([0], [0])))


def two_call(op: Operator, l: Tensor, win_rates_of: Callable[[Tensor], Tensor]) -> tuple[Tensor, Tensor]:
    """Extragradient / mirror-prox wrapper: half = Op(l; g(l)), full = Op(l; g(half)).

    Both calls start from the same point ``l``; only the opponent of the second call moves. With
    ``op = omd`` this is EGPO, with ``op = prox`` it is Nash-MP. Returns (full, half).
    """
    half = op(l, win_rates_of(l))
    return op(l, win_rates_of(half)), half


def is_reset_step(step: int, every: int | None) -> bool:
    """True after every ``every``-th completed step (1-based); ``None`` or 0 never resets."""
    return bool(every) and step > 0 and step % every == 0
