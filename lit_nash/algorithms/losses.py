"""The practical losses of ALGORITHMS.md §4, written once and composed by the algorithms.

All work on per-response log-probs (N, m) (summed or per-token mean, as the algorithm says), each response
of a rollout scored once; pairwise losses take differences through ``Rollout.difference``:

* ``anchored_log_ratio``  h(y) = ℓ_θ(y) − Σ_a w_a·ℓ_a(y), Σ w = 1 (IPO, INPO, MNPO, COMAL, SPPO, EGPO)
* ``squared_regression``  mean of weight·(h − target)² (pairwise or per response)
* ``policy_gradient``     REINFORCE with baseline ½ and KL terms as score-function terms (Nash-MD-PG, MPO,
                          approximate Nash-MP): −(p − ½)·ℓ_θ(y) + Σ_c coef·sg(ℓ_θ(y) − ℓ_c(y))·ℓ_θ(y)

Every loss is a mean over the step's prompt rows (weights are scaled to mean 1 over the step), so the engine's
micro-batches, slices of prompts each weighted by its share of them, add up to the step's gradient.
"""

from __future__ import annotations

from typing import Sequence

from torch import Tensor


def anchored_log_ratio(logp: Tensor, anchors: Sequence[tuple[float, Tensor]]) -> Tensor:
    return logp - sum(w * anchor for w, anchor in anchors)


def squared_regression(h: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
    """mean of weight·(h − target)². ``Rollout.weight`` has mean 1 over the step, so this is the step's
    weighted mean Σ w·err / Σ w, and a micro-batch's share of it (the engine weighs each by its prompts)."""
    err = (h - target).pow(2)
    return err.mean() if weight is None else (weight * err).mean()


def policy_gradient(logp: Tensor, win_prob: Tensor, kl_terms: Sequence[tuple[float, Tensor]] = (),
                    sequence: Tensor | None = None, behavior: Tensor | None = None) -> Tensor:
    """``kl_terms`` are (coefficient, ℓ_anchor(y)) pairs: each adds coef·KL(π_θ‖anchor) in expectation.

    Each KL term multiplies sequence log-probs, sg(ℓ_θ − ℓ_anchor)(y)·ℓ_θ(y), so for y ~ π_θ its expected
    gradient is exactly ∇KL(π_θ‖anchor) of the sequence distribution (tests/algorithms/test_nash_md.py).
    TRL's Nash-MD multiplies per token and sums instead, which keeps only the same-token terms.

    ``logp`` is what the reward term's score reads (summed or per-token mean log-probs); ``sequence`` is the
    summed log-probs ℓ_θ(y) with grad (default ``logp``), which the KL terms, and their anchors, must be: the
    score function of the per-token mean is not the sequence distribution's, and with it the expected
    gradient misses ∇KL (by 70% on an enumerable LM, tests/algorithms/test_policy_gradient.py).

    ``behavior``: the sequence log-probs of the policy that sampled the responses. Each response's term is
    weighted by sg(π_θ/π_behavior)(y) (``importance_weighted``), so the estimator stays one of y ~ π_θ when a
    round's later epochs reuse π_t's samples; it is 1 on the step that sampled them."""
    sequence = logp if sequence is None else sequence
    loss = -(win_prob - 0.5) * logp
    for coef, anchor in kl_terms:
        loss = loss + coef * (sequence.detach() - anchor) * sequence
    return importance_weighted(loss, sequence, behavior).mean()


def importance_weighted(loss: Tensor, sequence: Tensor, behavior: Tensor | None) -> Tensor:
    """Per-response ``loss`` times sg(exp(ℓ_θ − ℓ_behavior)), the ratio a score-function estimator needs when its
    samples came from another policy (None: they came from π_θ)."""
    return loss if behavior is None else (sequence.detach() - behavior).exp() * loss
