"""Closed-form tabular operators of ALGORITHMS.md §2.1 / §4, in log-space and batched.

Every function takes log-policies ``l`` of shape (..., K) (logits; any additive constant is
allowed) and win-rate vectors ``g = P @ pi_opponent`` of the same shape, and returns new logits
normalized to log-probabilities. Leading dimensions are independent games (or prompts), so one call
advances thousands of games at once, on whatever device the tensors live on.

The algorithms in ``lit_nash.algorithms`` compose these operators; ``simulate`` runs any algorithm's
exact dynamics on a batch of matrix games.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

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


class Simulation(NamedTuple):
    log_pi: Tensor  # final log-policies, (games, K)
    trajectory: Tensor  # log-policies at the recorded steps, (records, games, K)
    steps: Tensor  # the step index of each record (0 = the start)


def simulate(
    algorithm,
    P: Tensor,
    steps: int,
    ref: Tensor | None = None,
    init: Tensor | None = None,
    record_every: int = 0,
) -> Simulation:
    """Run ``algorithm``'s exact dynamics for ``steps`` steps on a batch of games at once.

    ``P`` is (games, K, K) (or one K×K game); ``ref`` the reference logits (default uniform) and
    ``init`` the starting logits (default the reference). The algorithm object is the one ``fit`` uses,
    schedule included; its step counter restarts at 0. ``record_every=n`` keeps every n-th iterate.
    """
    from lit_nash.policy import TabularPolicy

    P = torch.as_tensor(P, dtype=torch.float64)
    P = P.unsqueeze(0) if P.dim() == 2 else P
    games, K = P.shape[0], P.shape[-1]
    policy = TabularPolicy(games, K).to(P.device)
    if ref is not None:
        policy.snapshots.set("ref", normalize(torch.as_tensor(ref, dtype=P.dtype, device=P.device).expand(games, K)))
    start = policy.snapshot("ref") if init is None else torch.as_tensor(init, dtype=P.dtype, device=P.device)
    policy.set_logits(normalize(start.expand(games, K)))

    def oracle(log_pi: Tensor) -> Tensor:
        return win_rates(P, log_pi)

    algorithm.step = 0
    algorithm.prepare(policy)
    records, at = [policy.log_probs().clone()], [0]
    for t in range(1, steps + 1):
        policy.set_logits(algorithm.exact_step(policy, oracle))
        algorithm.end_step(policy)
        if record_every and t % record_every == 0:
            records.append(policy.log_probs().clone())
            at.append(t)
    return Simulation(policy.log_probs(), torch.stack(records), torch.tensor(at))
