"""The policy-gradient losses (MPO, MMD, Nash-MD's pg, Nash-MP) as estimators, with their expectations taken
exactly: on an enumerable causal LM (every response of a tiny GPT-2 on the token game) and on a tabular policy.

Issue 22.5: with ``logprob_reduction=mean`` the KL terms multiplied per-token mean log-probs, whose score
function is not the sequence distribution's, and their expected gradient missed ∇KL(π_θ‖anchor).
"""

from functools import partial

import pytest
import torch

from lit_nash.algorithms import ALGORITHMS
from lit_nash.rollout import Rollout, Rollouts

from .exact import flat_grad, on_policy

# the anchors each loss regularizes toward, with their coefficients; every anchor is set to the reference below
KL_COEFFICIENTS = {
    "mpo": lambda a: a.tau,  # τ·KL(π‖magnet); (1/η)·KL(π‖π_t) has zero gradient at π_t = π_θ
    "mmd": lambda a: a.tau,
    "nash_md": lambda a: a.regularization,
    "nash_mp": lambda a: a.tau + 1 / a.eta,  # β·KL(π‖ref) + (1/s)·KL(π‖anchor)
}


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("name", sorted(KL_COEFFICIENTS))
def test_the_kl_terms_expected_gradient_is_exact_with_either_reduction(name, reduction, enumerable_lm):
    """With p = ½ (the reward term vanishes) the loss's expected gradient under π_θ is c·∇KL(π_θ‖π_ref) of the
    sequence distribution, whatever ``logprob_reduction``. With ``mean`` the KL terms used to multiply the
    per-token mean log-probs: 70% off (relative error of the gradient, each of the four; 2e-6 now)."""
    policy, prompt, responses = enumerable_lm
    algo = ALGORITHMS[name](logprob_reduction=reduction)
    grad = partial(flat_grad, params=policy.trainable_parameters())
    sequence = policy.response_log_probs(prompt, responses)  # Σ over tokens, with grad
    ref = policy.response_log_probs(prompt, responses, source="ref")
    pi = sequence.exp()
    exact = grad(KL_COEFFICIENTS[name](algo) * (pi * (sequence - ref)).sum(-1).mean())

    logp = policy.response_log_probs(prompt, responses, reduction=reduction)  # what the loss is given
    anchor = policy.response_log_probs(prompt, responses, source="ref", reduction=reduction)
    rollout = Rollout(prompt=prompt, responses=responses, reduction=reduction, p=torch.full_like(logp, 0.5),
                      lengths=Rollouts(policy, None, None).lengths(responses), policy_logp=logp.detach(),
                      anchors={"ref": anchor, "magnet": anchor, "anchor": anchor})
    expected = grad(algo.loss(rollout, on_policy(logp, pi)))
    assert ((expected - exact).norm() / exact.norm()).item() < 1e-4
