import pytest
import torch

from lit_nash.algorithms import SPPO
from lit_nash.algorithms.simulate import simulate
from lit_nash.games import duality_gap, egpo_random
from lit_nash.generation import TabularSampler
from lit_nash.policy import TabularPolicy
from lit_nash.preference import GameOracle
from lit_nash.rollout import Rollouts

from .exact import gaps


def test_last_iterate_cycles_on_the_comal_cycle(comal):
    """MWU has no last-iterate convergence (ALGORITHMS.md §2.4: gap 0.25–0.8 after 1e3–2e4 steps)."""
    sim = simulate(SPPO(eta=1.0), comal, 20_000, record_every=100)
    assert gaps(comal, sim)[-1] > 0.1
    assert gaps(comal, sim)[-50:].min() > 0.1  # not a lucky phase: it never settles


def test_average_iterate_approaches_the_equilibrium(comal):
    """What MWU does guarantee: the time-average policy has a small gap (no-regret), the last iterate not."""
    sim = simulate(SPPO(eta=0.05), comal, 20_000, record_every=1)
    average = sim.trajectory.exp().mean(0)
    assert duality_gap(comal, average).item() < 0.02
    assert gaps(comal, sim)[-1] > 5 * duality_gap(comal, average).item()


def test_step_is_multiplicative_weights(comal):
    sim = simulate(SPPO(eta=0.3), comal, 1, record_every=1)
    pi0 = torch.full((1, 3), 1 / 3, dtype=torch.float64)
    expected = torch.softmax(0.3 * (comal @ pi0.unsqueeze(-1)).squeeze(-1), -1)
    torch.testing.assert_close(sim.log_pi.exp(), expected, rtol=0, atol=1e-15)


def sppo_rollouts(win_rate, k=5, seed=0):
    """One SPPO rollout on three random 6-action games from the uniform start, and the labeled k×k matrix."""
    game = egpo_random(num_actions=6, num_games=3, seed=1)
    network = TabularPolicy(game=game)
    rollouts = Rollouts(network, TabularSampler(network), GameOracle(game))
    algo = SPPO(eta=2.0, k=k, win_rate=win_rate)
    torch.manual_seed(seed)
    rollout = algo.rollout(rollouts, torch.arange(3))
    return rollout, rollouts.label_all_pairs(torch.arange(3), rollout.samples["policy"])


def test_default_win_rate_is_the_official_row_mean_with_the_half_diagonal():
    """Issue 14.2: uclaml/SPPO scripts/compute_prob.py divides each row sum of the k×k matrix, diagonal ½
    included, by k. The targets η·(P̂ − ½) of best and worst use that estimate by default."""
    assert SPPO().win_rate == "mean"
    rollout, P = sppo_rollouts("mean")
    k = P.shape[-1]
    mean = P.sum(-1) / k
    best, worst = mean.argmax(-1), mean.argmin(-1)
    expected = 2.0 * (torch.stack([mean.gather(1, best[:, None]), mean.gather(1, worst[:, None])], 1).squeeze(-1) - 0.5)
    torch.testing.assert_close(rollout.target, expected, rtol=0, atol=1e-15)


def test_leave_one_out_stays_selectable_and_differs_by_k_minus_1_over_k():
    mean, P = sppo_rollouts("mean")
    loo, P_loo = sppo_rollouts("leave_one_out")
    torch.testing.assert_close(P, P_loo)  # the same samples
    assert torch.equal(mean.responses, loo.responses)  # both estimates rank alike: the same best and worst
    k = P.shape[-1]
    torch.testing.assert_close(mean.target, (k - 1) / k * loo.target, rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match="win_rate"):
        SPPO(win_rate="median")
