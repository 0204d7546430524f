"""The policy-gradient losses (MPO, MMD, Nash-MD's pg, Nash-MP) as estimators, with their expectations taken
exactly: on an enumerable causal LM (every response of a tiny GPT-2 on the token game) and on a tabular policy.

Issue 22.5: with ``logprob_reduction=mean`` the KL terms multiplied per-token mean log-probs, whose score
function is not the sequence distribution's, and their expected gradient missed ∇KL(π_θ‖anchor); and MPO's
later epochs of a round (``rollout.epochs_per_round`` > 1) reused π_t's samples as if they were π_θ's.
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


def round_fixed_point(algo, steps, lr):
    """A round of MPO with infinitely many samples: every action of π_t's 5-action games, weighted by π_t (the
    samples of one rollout, in expectation), against π_t (p = P(y ≻ π_t)); gradient steps on the logits until
    they stop moving. Returns (where the round's epochs end, the exact prox step from π_t)."""
    from lit_nash.games import dynamics as D, egpo_random
    from lit_nash.policy import TabularPolicy

    game = egpo_random(num_actions=5, num_games=3, seed=3)
    policy = TabularPolicy(game=game, reference="gaussian", reference_seed=1)
    g = torch.Generator().manual_seed(2)
    policy.set_logits(D.normalize(torch.randn(3, 5, dtype=torch.float64, generator=g)))
    policy.refresh_snapshot("magnet")
    policy.set_logits(D.normalize(torch.randn(3, 5, dtype=torch.float64, generator=g)))  # π_t ≠ magnet
    l_t = policy.log_probs()
    win = (game.P @ l_t.exp().unsqueeze(-1)).squeeze(-1)  # P(y ≻ π_t)
    responses, prompt = torch.arange(5).expand(3, -1), torch.arange(3)
    rollout = Rollout(prompt=prompt, responses=responses, p=win, policy_logp=l_t,
                      anchors={"magnet": policy.snapshot("magnet")})
    for _ in range(steps):
        loss = algo.loss(rollout, on_policy(policy.response_log_probs(prompt, responses), l_t.exp()))
        (grad,) = torch.autograd.grad(loss * 3, policy.logits)  # per prompt
        with torch.no_grad():
            policy.logits -= lr * grad
    prox = D.prox(l_t, win, algo.eta, algo.tau, policy.snapshot("magnet"))
    return policy.log_probs(), prox


@pytest.mark.parametrize("eta, lr", [(1.0, 0.5), (10.0, 5.0)])
@pytest.mark.parametrize("variant", ["mpo", "rt"])
def test_a_rounds_epochs_on_pi_t_samples_reach_the_prox_step(variant, eta, lr):
    """Issue 22.5: with ``rollout.epochs_per_round`` > 1 MPO's later epochs score π_t's samples at θ ≠ θ_t.
    Weighted by sg(π_θ/π_t), the expected gradient is the prox objective's at θ, so a round's epochs end on
    the prox step of the exact form (to 1e-10). Unweighted, they ended elsewhere: max |Δ log π| 0.010 at
    η = 1 and 0.42 at η = 10 (τ = 0.1, 5 actions; max |Δπ| 0.0018 and 0.086)."""
    found, prox = round_fixed_point(ALGORITHMS["mpo"](eta=eta, tau=0.1, variant=variant), steps=4000, lr=lr)
    torch.testing.assert_close(found, prox, rtol=0, atol=1e-10)
