from functools import partial

import pytest
import torch

from lit_nash.algorithms import NashMP
from lit_nash.algorithms.simulate import simulate

from .exact import contraction, gaps, kl_curve, reg_gaps


def test_reaches_the_regularized_equilibrium_on_the_comal_cycle(comal):
    sim = simulate(NashMP(eta=1.0, tau=0.1), comal, 1000, record_every=100)
    assert reg_gaps(comal, sim, 0.1)[-1] < 1e-10
    assert gaps(comal, sim)[-1] == pytest.approx(0.0245, abs=1e-4)


@pytest.mark.parametrize("eta", [0.5, 1.0, 2.0, 4.0])
def test_linear_convergence_on_random_games(egpo_games, eta):
    """§2.12: at τ = 0.01 Nash-MP converges for s ∈ {0.5, 1, 2, 4}, per-step contraction ≈ (1 − sτ)²
    (two prox calls; measured 0.9900, 0.9800, 0.9606, 0.9244). Tolerance 0.005 covers the exact-prox
    factor 1/(1 + sτ)² ≥ (1 − sτ)², which differs by 0.003 at s = 4."""
    P, ref, tau, star = egpo_games
    curve = kl_curve(star, simulate(NashMP(eta=eta, tau=tau), P, 3000, ref=ref, record_every=10))
    assert contraction(torch.arange(0, 3001, 10), curve) == pytest.approx((1 - eta * tau) ** 2, abs=0.005)
    assert curve[-1] < 1e-10


# -- the moving prox center (center_rate < 1, an EMA of the iterates) -------------------------------------

@pytest.mark.parametrize("rate", [0.5, 0.2, 0.05])
def test_a_moving_prox_center_keeps_the_regularized_equilibrium(comal, rate):
    """π*_τ is the fixed point whatever the center's rate (at c = π_k = π*_τ each prox step returns π*_τ);
    measured on the cycle: regularized gap below 3e-16 by step 2500 at rate 0.05, sooner at larger rates."""
    sim = simulate(NashMP(eta=1.0, tau=0.1, center_rate=rate), comal, 3000, record_every=100)
    assert reg_gaps(comal, sim, 0.1)[-1] < 1e-10
    assert gaps(comal, sim)[-1] == pytest.approx(0.0245, abs=1e-4)


def test_a_slower_center_trades_speed_for_damping(egpo_games):
    """Random games at τ = 0.01, s = 1: KL to π*_τ after 500 steps was 1.9e-5 (rate 1, pure mirror prox),
    3.0e-3 (0.5), 6.2e-2 (0.2) — an EMA center damps the step, so in exact play it only slows convergence;
    with s = 4 the slow center still reaches 1e-14 by step 2000 (rate 0.2)."""
    P, ref, tau, star = egpo_games
    at_500 = [kl_curve(star, simulate(NashMP(eta=1.0, tau=tau, center_rate=r), P, 500, ref=ref, record_every=500))[-1]
              for r in (1.0, 0.5, 0.2)]
    assert at_500[0] < at_500[1] < at_500[2]
    curve = kl_curve(star, simulate(NashMP(eta=4.0, tau=tau, center_rate=0.2), P, 3000, ref=ref, record_every=500))
    assert curve[-1] < 1e-10


def test_the_center_is_the_geometric_mixture_of_itself_and_the_new_iterate(comal):
    """In exact play the EMA of the logits is c ∝ c^(1−rate)·π^rate, renormalized, after every step."""
    from lit_nash.games.dynamics import normalize, win_rates
    from lit_nash.policy import TabularPolicy

    algo, policy = NashMP(eta=1.0, tau=0.1, center_rate=0.3), TabularPolicy(1, 3)
    algo.prepare(policy)
    oracle = partial(win_rates, comal)
    for _ in range(3):
        center = policy.snapshot("anchor").clone()
        policy.set_logits(algo.exact_step(policy, oracle))
        algo.end_step(policy)
        expected = normalize(0.7 * center + 0.3 * policy.log_probs())
        assert torch.allclose(policy.snapshot("anchor"), expected, atol=1e-15, rtol=0)
        assert torch.allclose(policy.snapshot("anchor").exp().sum(-1), torch.ones(1, dtype=torch.float64))


@pytest.mark.parametrize("rate", [0, -0.1, 1.5, "fast"])
def test_a_center_rate_outside_0_1_is_refused(rate):
    with pytest.raises(ValueError, match=r"algo=nash_mp: center_rate .*\(0, 1\]"):
        NashMP(center_rate=rate)
