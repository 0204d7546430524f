"""The practical losses of ALGORITHMS.md §4, written once and composed by the algorithms.

All work on per-response log-probs (N, m) (summed or per-token mean, as the algorithm says), each response
of a rollout scored once; pairwise losses take differences through ``Rollout.difference``:

* ``anchored_log_ratio``  h(y) = ℓ_θ(y) − Σ_a w_a·ℓ_a(y), Σ w = 1 (IPO, INPO, MNPO, COMAL, SPPO, EGPO)
* ``squared_regression``  mean of weight·(h − target)² (pairwise or per response)
* ``policy_gradient``     REINFORCE with baseline ½ and KL terms as score-function terms (Nash-MD-PG, MPO,
                          approximate Nash-MP): −(p − ½)·ℓ_θ(y) + Σ_c coef·sg(ℓ_θ(y) − ℓ_c(y))·ℓ_θ(y)
"""

from __future__ import annotations

from typing import Sequence

from torch import Tensor


def anchored_log_ratio(logp: Tensor, anchors: Sequence[tuple[float, Tensor]]) -> Tensor:
    return logp - sum(w * anchor for w, anchor in anchors)


def squared_regression(h: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
    err = (h - target).pow(2)
    if weight is None:
        return err.mean()
    return (weight * err).sum() / weight.sum().clamp_min(1e-12)


def policy_gradient(logp: Tensor, win_prob: Tensor, kl_terms: Sequence[tuple[float, Tensor]] = ()) -> Tensor:
    """``kl_terms`` are (coefficient, ℓ_anchor(y)) pairs: each adds coef·KL(π_θ‖anchor) in expectation.

    Each KL term multiplies sequence log-probs, sg(ℓ_θ − ℓ_anchor)(y)·ℓ_θ(y), so for y ~ π_θ its expected
    gradient is exactly ∇KL(π_θ‖anchor) of the sequence distribution (tests/algorithms/test_nash_md.py).
    TRL's Nash-MD multiplies per token and sums instead, which keeps only the same-token terms."""
    loss = -(win_prob - 0.5) * logp
    for coef, anchor in kl_terms:
        loss = loss + coef * (logp.detach() - anchor) * logp
    return loss.mean()
