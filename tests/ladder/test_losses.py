"""Rung 2 of the correctness ladder: each practical loss, taken with exact expectations on a tabular
policy, reproduces its algorithm's closed-form step (ALGORITHMS.md §3 target 4 and §2)."""

import itertools

import pytest
import torch

from lit_nash.algorithms import EGPO, INPO, MNPO, SPPO, OnlineIPO
from lit_nash.games import comal_cycle, egpo_random
from lit_nash.games import dynamics as D
from lit_nash.policy import TabularPolicy
from lit_nash.preference import GameOracle
from lit_nash.rollout import Rollout


def policy_for(game, seed=0):
    """A tabular policy away from its (gaussian) reference, so every anchor term matters, and the game's
    exact preference oracle."""
    policy = TabularPolicy(game.num_prompts, game.num_actions, reference="gaussian", reference_seed=seed)
    policy.set_logits(torch.randn(game.num_prompts, game.num_actions, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64))
    return policy, GameOracle(game)


def loss_of(algo, policy, rollout):
    """The algorithm's loss of a rollout, with the policy's log-probs of its responses (with grad)."""
    return algo.loss(rollout, policy.response_log_probs(rollout.prompt, rollout.responses, reduction=rollout.reduction))


def all_pairs(N, K):
    """Every ordered pair (y, y') of each prompt: (N, K²) and (N, K²)."""
    y, y2 = zip(*itertools.product(range(K), repeat=2))
    return torch.tensor(y).expand(N, -1), torch.tensor(y2).expand(N, -1)


def exact_ipo_rollout(policy, preference, algo, opponent_log_pi):
    """Online-IPO-1 with the uniform proposal over all pairs and y'' integrated out exactly."""
    N, K = policy.logits.shape
    prompt = torch.arange(N)
    y, y2 = all_pairs(N, K)
    g = preference.win_rates(opponent_log_pi)  # P(y ≻ π_opp)
    responses = torch.arange(K).expand(N, -1)  # every action once; the pairs index them
    return Rollout(prompt=prompt, responses=responses, pairs=torch.stack([y, y2], dim=-1),
                   target=(g.gather(1, y) - g.gather(1, y2)) / algo.tau,
                   anchors={"ref": policy.response_log_probs(prompt, responses, source="ref")})


def sgd_step(policy, loss, lr):
    """One SGD step on the logits. The loss averages over prompts; per prompt it is ALGORITHMS.md's
    K²-pair mean, so the per-prompt step is taken on the loss times the number of prompts."""
    (grad,) = torch.autograd.grad(loss * policy.logits.shape[0], policy.logits)
    return D.normalize(policy.logits.detach() - lr * grad)


@pytest.mark.parametrize("game", [comal_cycle(), egpo_random(num_actions=6, num_games=3, seed=2)], ids=["comal", "random"])
def test_one_sgd_step_of_exact_online_ipo_is_an_omd_step(game):
    """§3 target 4: one SGD step of lr on the exact Online-IPO-1 loss is OMD with ηβ = 4·lr/K for the paper's
    loss, so η = 4·lr·β/K for lit_nash's, which is β² times it (reward units)."""
    (policy, preference), K, lr, tau = policy_for(game), game.num_actions, 0.05, 0.1
    algo = OnlineIPO(tau=tau, k=K * K)
    new = sgd_step(policy, loss_of(algo, policy, exact_ipo_rollout(policy, preference, algo, policy.log_probs())), lr)
    eta = 4 * lr * tau / K
    expected = D.omd(policy.log_probs(), preference.win_rates(policy.log_probs()), eta, tau, policy.snapshot("ref"))
    torch.testing.assert_close(new, expected, rtol=0, atol=1e-8)


def test_one_exact_egpo_iteration_is_the_extragradient_omd_step():
    """EGPO's parameter-space schedule (step, sample from the half step, restore, step) with exact
    expectations is the two-call OMD wrapper with η = 4·lr·β/K (the loss in reward units)."""
    game = egpo_random(num_actions=5, num_games=2, seed=4)
    (policy, preference), K, lr, tau = policy_for(game), game.num_actions, 0.1, 0.1
    algo = EGPO(tau=tau, k=K * K)
    half = sgd_step(policy, loss_of(algo._ipo, policy, exact_ipo_rollout(policy, preference, algo, policy.log_probs())), lr)
    full = sgd_step(policy, loss_of(algo._ipo, policy, exact_ipo_rollout(policy, preference, algo, half)), lr)  # again from θ_t
    eta = 4 * lr * tau / K
    op = lambda l, g: D.omd(l, g, eta, tau, policy.snapshot("ref"))  # noqa: E731
    expected, _ = D.two_call(op, policy.log_probs(), preference.win_rates)
    torch.testing.assert_close(full, expected, rtol=0, atol=1e-8)


def minimize(policy, loss_fn):
    """Minimize a loss over the logits to float64 precision (L-BFGS)."""
    opt = torch.optim.LBFGS([policy.logits], lr=1, max_iter=500, tolerance_grad=1e-14, tolerance_change=1e-16,
                            history_size=50, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    opt.step(closure)
    return policy.log_probs()


def exact_pair_rollout(policy, preference, anchors):
    """Every ordered pair with its exact soft label and the on-policy weight π_t(y)·π_t(y')."""
    N, K = policy.logits.shape
    prompt = torch.arange(N)
    y, y2 = all_pairs(N, K)
    pi = policy.log_probs().exp()
    responses = torch.arange(K).expand(N, -1)  # every action once; the K² pairs index them
    return Rollout(prompt=prompt, responses=responses, pairs=torch.stack([y, y2], dim=-1),
                   p=preference.P[prompt[:, None], y, y2], weight=pi.gather(1, y) * pi.gather(1, y2),
                   policy_logp=policy.response_log_probs(prompt, responses).detach(),
                   anchors={source: policy.response_log_probs(prompt, responses, source=source) for source in anchors})


def test_inpo_loss_minimizer_is_the_omd_iterate():
    """With soft labels over on-policy pairs, INPO's loss is minimized exactly at the OMD iterate
    π ∝ μ^(ητ)·π_t^(1−ητ)·exp(η·P·π_t) (the INPO lemma; ALGORITHMS.md §2.9)."""
    game = egpo_random(num_actions=4, num_games=2, seed=1)
    (policy, preference), algo = policy_for(game), INPO(eta=2.0, tau=0.2, target="soft")
    start = policy.log_probs()
    expected = D.omd(start, preference.win_rates(start), algo.eta, algo.tau, policy.snapshot("ref"))
    rollout = exact_pair_rollout(policy, preference, ["ref"])
    found = minimize(policy, lambda: loss_of(algo, policy, rollout))
    torch.testing.assert_close(found, expected, rtol=0, atol=1e-7)


def test_mnpo_loss_minimizer_is_its_exact_step():
    """MNPO's loss with the history anchor is minimized at its exact step (history of two iterates)."""
    game = egpo_random(num_actions=4, num_games=2, seed=3)
    (policy, preference), algo = policy_for(game), MNPO(eta=1.5, tau=0.2, history_weights=[0.3, 0.7], target="soft")
    previous = policy.log_probs()
    policy.push_snapshot("history", maxlen=2)
    policy.set_logits(previous + 0.3 * torch.randn(previous.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(7)))
    policy.push_snapshot("history", maxlen=2)  # history = [π_t, π_{t−1}]
    algo.step = 1
    expected = algo.exact_step(policy, preference.win_rates)
    rollout = exact_pair_rollout(policy, preference, ["ref", "history/0", "history/1"])
    found = minimize(policy, lambda: loss_of(algo, policy, rollout))
    torch.testing.assert_close(found, expected, rtol=0, atol=1e-7)


def test_sppo_loss_minimizer_is_the_mwu_iterate_to_second_order():
    """SPPO regresses log π_θ/π_t to η·(P(y ≻ π_t) − ½), i.e. MWU with its normalizer log Z_t replaced by
    η/2 (the SPPO derivation). Since E_π_t[P(y ≻ π_t)] = ½, log Z_t − η/2 = O(η²): the minimizer of the
    loss over all responses is the MWU iterate up to an O(η²) error, which this test measures."""
    game = egpo_random(num_actions=5, num_games=3, seed=5)
    errors = []
    for eta in (0.1, 0.2):
        (policy, preference), algo = policy_for(game), SPPO(eta=eta)
        N, K = policy.logits.shape
        prompt, responses = torch.arange(N), torch.arange(K).expand(N, -1)
        start = policy.log_probs()
        rollout = Rollout(prompt=prompt, responses=responses, policy_logp=start.gather(1, responses),
                          target=algo.eta * (preference.win_rates(start) - 0.5))
        found = minimize(policy, lambda: loss_of(algo, policy, rollout))
        mwu = D.mwu(start, preference.win_rates(start), algo.eta)
        errors.append((found - mwu).abs().max().item())
    assert errors[0] < 1e-3
    assert 3.0 < errors[1] / errors[0] < 5.0  # doubling η quadruples the error: second order
