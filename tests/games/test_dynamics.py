"""The closed-form operators of ALGORITHMS.md §2.1/§4, and ``simulate`` on batches of games."""


import pytest
import torch

from lit_nash.algorithms import ALGORITHMS, EGPO, MPO
from lit_nash.algorithms.simulate import simulate
from lit_nash.games import comal_cycle, egpo_random, regularized_nash
from lit_nash.games import dynamics as D


@pytest.fixture
def game():
    P = egpo_random(num_actions=6, num_games=4, seed=5).P
    log_mu = torch.log_softmax(torch.randn(4, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64), -1)
    return P, log_mu


def test_regularized_operators_share_the_fixed_point_of_the_regularized_game(game):
    """π*_τ = softmax(log μ + Pπ*/τ) is a fixed point of OMD, prox and both two-call wrappers (§2.1)."""
    P, log_mu = game
    tau, eta = 0.2, 0.7
    star = torch.log(torch.as_tensor(regularized_nash(P, log_mu.exp(), tau)))
    g = D.win_rates(P, star)
    # regularized_nash stops at a regularized gap < 1e-13; the gap is quadratic in the error, so π*_τ
    # itself is pinned to ~1e-10, and a fixed point holds to that accuracy
    for op in (D.omd, D.prox):
        torch.testing.assert_close(op(star, g, eta, tau, log_mu), star, rtol=0, atol=1e-9)
        full, half = D.two_call(lambda l, g_: op(l, g_, eta, tau, log_mu), star, lambda l: D.win_rates(P, l))
        torch.testing.assert_close(full, star, rtol=0, atol=1e-9)
        torch.testing.assert_close(half, star, rtol=0, atol=1e-9)


def test_operators_match_their_formulas(game):
    P, log_mu = game
    l = torch.log_softmax(torch.randn(4, 6, dtype=torch.float64), -1)
    g, eta, tau = D.win_rates(P, l), 0.5, 0.3
    softmax = lambda x: torch.softmax(x, -1)  # noqa: E731
    torch.testing.assert_close(D.mwu(l, g, eta).exp(), softmax(l + eta * g))
    torch.testing.assert_close(D.omd(l, g, eta, tau, log_mu).exp(), softmax((1 - eta * tau) * l + eta * tau * log_mu + eta * g))
    torch.testing.assert_close(D.prox(l, g, eta, tau, log_mu).exp(), softmax((l + eta * tau * log_mu + eta * g) / (1 + eta * tau)))
    torch.testing.assert_close(D.geometric_mixture(l, log_mu, 0.25).exp(), softmax(0.75 * l + 0.25 * log_mu))
    history = torch.stack([l, log_mu])
    torch.testing.assert_close(D.history_mixture(history, torch.tensor([0.3, 0.7])).exp(), softmax(0.3 * l + 0.7 * log_mu))


def test_two_call_plays_the_second_call_against_the_half_step(game):
    P, log_mu = game
    l = torch.log_softmax(torch.randn(4, 6, dtype=torch.float64), -1)
    op = lambda x, g: D.omd(x, g, 1.0, 0.1, log_mu)  # noqa: E731
    full, half = D.two_call(op, l, lambda x: D.win_rates(P, x))
    torch.testing.assert_close(half, op(l, D.win_rates(P, l)))
    torch.testing.assert_close(full, op(l, D.win_rates(P, half)))


def test_reset_schedule():
    assert [t for t in range(0, 11) if D.is_reset_step(t, 3)] == [3, 6, 9]
    assert not any(D.is_reset_step(t, None) for t in range(10))


def test_simulate_is_batched_and_games_are_independent():
    """One call advances many games; each game's trajectory equals its own single-game run."""
    P = egpo_random(num_actions=10, num_games=200, seed=0).P
    batch = simulate(EGPO(eta=1.0, tau=0.1), P, 100, record_every=50)
    assert batch.trajectory.shape == (3, 200, 10) and batch.steps.tolist() == [0, 50, 100]
    for i in (0, 137):
        single = simulate(EGPO(eta=1.0, tau=0.1), P[i], 100)
        torch.testing.assert_close(batch.log_pi[i], single.log_pi[0], rtol=0, atol=1e-13)


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_every_algorithm_runs_on_a_batch_of_games(name):
    P = egpo_random(num_actions=10, num_games=64, seed=1).P
    sim = simulate(ALGORITHMS[name](), P, 20)
    assert sim.log_pi.shape == (64, 10)
    torch.testing.assert_close(sim.log_pi.exp().sum(-1), torch.ones(64, dtype=torch.float64))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_simulate_runs_on_the_gpu_and_agrees_with_the_cpu():
    P = comal_cycle().P
    cpu = simulate(MPO(), P, 300)
    gpu = simulate(MPO(), P.cuda(), 300)
    assert gpu.log_pi.is_cuda
    torch.testing.assert_close(gpu.log_pi.cpu(), cpu.log_pi, rtol=0, atol=1e-12)
