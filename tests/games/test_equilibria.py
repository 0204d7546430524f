"""Exact equilibria and gaps: the ground truth every algorithm is scored against (ALGORITHMS.md §3)."""

import time

import numpy as np
import pytest
import torch

from lit_nash.games import (
    MatrixGame,
    comal_cycle,
    duality_gap,
    egpo_random,
    exploitability,
    kl,
    kl_to_nash,
    nash_equilibrium,
    regularized_duality_gap,
    regularized_nash,
)
from lit_nash.games.equilibria import residual_tolerance

COMAL_NE = np.array([4.0, 3.0, 4.0]) / 11


def random_policies(shape, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(*shape, generator=gen, dtype=torch.float64), dim=-1)


def J(P, pi1, pi2, mu, tau):
    """Regularized payoff J_τ(π1, π2; μ) = π1ᵀPπ2 − τ KL(π1‖μ) + τ KL(π2‖μ)."""
    payoff = (pi1.unsqueeze(-2) @ P @ pi2.unsqueeze(-1)).squeeze(-1).squeeze(-1)
    return payoff - tau * kl(pi1, mu) + tau * kl(pi2, mu)


# ------------------------------------------------------------------------------------------ validation


def _bad_entry():
    P = np.full((3, 3), 0.5)
    P[0, 1], P[1, 0] = 1.2, -0.2  # P + Pᵀ = 1 still holds: only the range check catches it
    return P


def _not_complementary():
    P = np.full((3, 3), 0.5)
    P[0, 2], P[2, 0] = 0.6, 0.6
    return P


def _functions_of_P():
    pi, mu = np.array([0.2, 0.3, 0.5]), np.full(3, 1 / 3)
    return {
        "nash_equilibrium": lambda P: nash_equilibrium(P),
        "duality_gap": lambda P: duality_gap(P, pi),
        "exploitability": lambda P: exploitability(P, pi),
        "kl_to_nash": lambda P: kl_to_nash(P, pi),
        "kl_to_nash(ne=)": lambda P: kl_to_nash(P, pi, ne=mu),
        "regularized_duality_gap": lambda P: regularized_duality_gap(P, pi, mu, 0.1),
        "regularized_nash": lambda P: regularized_nash(P, mu, 0.1),
    }


@pytest.mark.parametrize("name", list(_functions_of_P()))
@pytest.mark.parametrize("bad", [_bad_entry, _not_complementary])
@pytest.mark.parametrize("kind", ["numpy", "torch", "list"])
def test_functions_of_P_reject_invalid_P_like_matrix_game(name, bad, kind):
    P = bad()
    with pytest.raises(ValueError) as expected:
        MatrixGame(P=P)
    assert "preference matrix" in str(expected.value)
    P = {"numpy": P, "torch": torch.as_tensor(P), "list": P.tolist()}[kind]
    with pytest.raises(ValueError) as got:
        _functions_of_P()[name](P)
    assert str(got.value) == str(expected.value)


def test_functions_of_P_accept_a_valid_float32_P():
    P = comal_cycle().P[0].float()  # within the validator's 1e-6 after float32 rounding
    for name, fn in _functions_of_P().items():
        assert np.all(np.isfinite(np.asarray(fn(P)))), name


# ------------------------------------------------------------------------------------------ exact NE


def test_comal_nash_equilibrium():
    ne = nash_equilibrium(comal_cycle().P)
    assert ne.shape == (1, 3)
    np.testing.assert_allclose(ne[0].numpy(), COMAL_NE, atol=1e-9)


def test_ne_has_zero_gaps_on_random_games():
    P = egpo_random(10, num_games=5, seed=0).P
    ne = nash_equilibrium(P)
    assert ne.shape == (5, 10)
    assert torch.allclose(ne.sum(-1), torch.ones(5, dtype=torch.float64)) and (ne >= 0).all()
    assert duality_gap(P, ne).abs().max() < 1e-9
    assert exploitability(P, ne).abs().max() < 1e-9
    assert kl_to_nash(P, ne).abs().max() < 1e-12
    # A symmetric NE: no pure response beats it, and it beats nothing by more than ½ either.
    assert ((P @ ne.unsqueeze(-1)).squeeze(-1) <= 0.5 + 1e-9).all()


def test_gaps_of_non_equilibria():
    P = comal_cycle().P[0]
    pi = random_policies((4, 3), seed=1)
    gap = duality_gap(P, pi)
    assert gap.shape == (4,) and (gap > 0).all()
    assert torch.allclose(exploitability(P, pi), gap / 2)
    assert torch.allclose(gap, 2 * (P @ pi.T).T.amax(-1) - 1)
    # A pure policy on the COMAL cycle is beaten with probability 0.9 by its counter.
    assert duality_gap(P, torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)).item() == pytest.approx(0.8)
    assert (kl_to_nash(P, pi) > 0).all()
    assert torch.isinf(kl_to_nash(P, torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)))


def test_kl_to_nash_uses_given_ne_and_xlogy():
    P = comal_cycle().P[0]
    ne = torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64)  # 0·log 0 = 0, not nan
    pi = torch.tensor([0.25, 0.25, 0.5], dtype=torch.float64)
    assert kl_to_nash(P, pi, ne=ne).item() == pytest.approx(np.log(2))


def test_numpy_in_numpy_out_torch_in_torch_out():
    P_t = comal_cycle().P[0]
    P_n = P_t.numpy()
    pi_n = np.array([0.2, 0.3, 0.5])
    mu_n = np.full(3, 1 / 3)
    for fn, args in [
        (nash_equilibrium, ()),
        (duality_gap, (pi_n,)),
        (exploitability, (pi_n,)),
        (kl_to_nash, (pi_n,)),
        (regularized_duality_gap, (pi_n, mu_n, 0.1)),
        (regularized_nash, (mu_n, 0.1)),
    ]:
        out_n = fn(P_n, *args)
        assert isinstance(out_n, (np.ndarray, np.floating)), fn.__name__
        out_t = fn(P_t, *[torch.as_tensor(a) if isinstance(a, np.ndarray) else a for a in args])
        assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.float64, fn.__name__
        np.testing.assert_allclose(out_t.numpy(), out_n, atol=1e-12)
    assert isinstance(kl(pi_n, mu_n), np.floating)


def test_batched_shapes_and_broadcasting():
    P = egpo_random(6, num_games=4, seed=2).P.reshape(2, 2, 6, 6)
    pi = random_policies((2, 2, 6))
    assert nash_equilibrium(P).shape == (2, 2, 6)
    assert duality_gap(P, pi).shape == (2, 2)
    assert kl_to_nash(P, pi).shape == (2, 2)
    mu = random_policies((6,), seed=3)  # one reference policy for every game
    assert regularized_duality_gap(P, pi, mu, 0.5).shape == (2, 2)
    assert regularized_nash(P, mu, 0.5).shape == (2, 2, 6)
    # One game against a batch of policies.
    assert duality_gap(P[0, 0], pi).shape == (2, 2)


# ------------------------------------------------------------------------------------------ regularized


def test_comal_regularized_nash_at_tau_0_1():
    P = comal_cycle().P[0]
    mu = torch.full((3,), 1 / 3, dtype=torch.float64)
    pi = regularized_nash(P, mu, 0.1)
    np.testing.assert_allclose(pi.numpy(), [0.3371, 0.2835, 0.3794], atol=1e-4)
    assert duality_gap(P, pi).item() == pytest.approx(0.0245, abs=1e-4)
    # It is the fixed point softmax(log μ + Pπ/τ).
    assert torch.allclose(pi, torch.softmax(mu.log() + P @ pi / 0.1, -1), atol=1e-12)


@pytest.mark.parametrize("tau", [0.01, 0.1, 1.0])
def test_regularized_nash_reaches_machine_precision(tau):
    comal = comal_cycle().P
    uniform = torch.full((1, 3), 1 / 3, dtype=torch.float64)
    assert regularized_duality_gap(comal, regularized_nash(comal, uniform, tau), uniform, tau).max() < 1e-12

    P = egpo_random(10, num_games=10, seed=0).P
    mu = random_policies((10, 10), seed=4)  # μ = softmax(N(0, 1))
    pi = regularized_nash(P, mu, tau)
    assert (pi > 0).all() and torch.allclose(pi.sum(-1), torch.ones(10, dtype=torch.float64))
    assert regularized_duality_gap(P, pi, mu, tau).max() < 1e-12


def fixed_point_residual(P, pi, mu, tau):
    """max_y |log π(y) − log softmax(log μ + Pπ/τ)(y)|, the residual regularized_nash's docstring defines."""
    br = torch.log_softmax(mu.log() + (P @ pi.unsqueeze(-1)).squeeze(-1) / tau, -1)
    return (pi.log() - br).abs().amax(-1)


@pytest.mark.parametrize("tau", [0.02, 0.1])
@pytest.mark.parametrize("K", [3, 10, 24])
@pytest.mark.parametrize("ref", ["uniform", "gaussian"])
def test_regularized_nash_fixed_point_residual(tau, K, ref):
    # The gap alone stopped at residuals up to 4e-6 here (τ = 0.02, K = 3), with a gap < 1e-13.
    for seed in range(6):
        P = egpo_random(K, num_games=8, seed=seed).P
        if ref == "uniform":
            mu = torch.full((8, K), 1 / K, dtype=torch.float64)
        else:
            mu = random_policies((8, K), seed=100 + seed)
        pi = regularized_nash(P, mu, tau)
        assert fixed_point_residual(P, pi, mu, tau).max() < 1e-10, (seed, ref)
        assert regularized_duality_gap(P, pi, mu, tau).max() < 1e-9, (seed, ref)


def test_regularized_nash_residual_at_tiny_tau_and_outside_mu_support():
    # At τ = 0.001 the gap stopped at residuals ~400 (tiny π(y) off by e^400); the default residual_tol is
    # 1e-15/τ² there, the float64 floor being ~ε/τ².
    P = egpo_random(10, num_games=4, seed=3).P
    mu = random_policies((4, 10), seed=11)
    mu[:, 0] = 0.0  # π*_τ has μ's support
    mu = mu / mu.sum(-1, keepdim=True)
    pi = regularized_nash(P, mu, 0.001)
    assert (pi[:, 0] == 0).all() and (pi[:, 1:] > 0).all()
    assert fixed_point_residual(P[:, 1:, 1:], pi[:, 1:], mu[:, 1:], 0.001).max() < 1e-9
    assert regularized_duality_gap(P, pi, mu, 0.001).max() < 1e-12


@pytest.mark.parametrize("tau", [0.001, 0.002, 0.01, 0.1])
def test_regularized_nash_holds_the_residual_it_states(tau):
    """Issue 22.5: the docstring promised machine precision and measured 3e-11 at τ = 0.001, where a returned
    residual was 2.8e-10. What holds is r < residual_tolerance(τ) = max(1e-11, 1e-15/τ²) (1e-9 at τ = 0.001),
    with the regularized gap below ``tol``; the smallest τ gets the loosest bound, and it is used."""
    P = egpo_random(10, num_games=4, seed=7).P
    mu = random_policies((4, 10), seed=8)
    pi = regularized_nash(P, mu, tau)
    assert fixed_point_residual(P, pi, mu, tau).max() < residual_tolerance(tau)
    assert regularized_duality_gap(P, pi, mu, tau).max() < 1e-13
    assert residual_tolerance(0.001) == pytest.approx(1e-9) and residual_tolerance(0.02) == 1e-11


def test_regularized_nash_raises_on_an_unreachable_residual():
    P = egpo_random(10, num_games=2, seed=0).P
    mu = random_policies((2, 10), seed=6)
    with pytest.raises(RuntimeError, match=r"max fixed-point residual .* \(residual_tol 1e-30\)"):
        regularized_nash(P, mu, 0.1, residual_tol=1e-30)


def test_regularized_nash_is_fast_at_small_tau():
    P = egpo_random(10, num_games=10, seed=1).P
    mu = random_policies((10, 10), seed=5)
    start = time.perf_counter()
    pi = regularized_nash(P, mu, 0.01)
    assert time.perf_counter() - start < 1.0
    assert regularized_duality_gap(P, pi, mu, 0.01).max() < 1e-12


def test_regularized_nash_tends_to_ne_as_tau_shrinks():
    P = comal_cycle().P[0]
    mu = torch.full((3,), 1 / 3, dtype=torch.float64)
    gaps = [duality_gap(P, regularized_nash(P, mu, tau)).item() for tau in (1.0, 0.1, 0.01)]
    assert gaps[0] > gaps[1] > gaps[2] > 0


def test_regularized_nash_raises_when_out_of_budget():
    P = egpo_random(10, num_games=2, seed=0).P
    mu = random_policies((2, 10), seed=6)
    with pytest.raises(RuntimeError, match="max remaining gap"):
        regularized_nash(P, mu, 0.001, max_iter=25)
    with pytest.raises(ValueError, match="tau must be positive"):
        regularized_nash(P, mu, 0.0)


@pytest.mark.parametrize("tau", [0.05, 0.3, 2.0])
def test_regularized_gap_is_nonnegative_and_matches_brute_force(tau):
    P = egpo_random(8, num_games=6, seed=3).P
    mu = random_policies((6, 8), seed=7)
    pi = random_policies((6, 8), seed=8)
    gap = regularized_duality_gap(P, pi, mu, tau)
    assert (gap >= 0).all()

    # Best responses of the strongly concave/convex inner problems: softmax(log μ ± (Pπ or Pᵀπ)/τ).
    br_max = torch.softmax(mu.log() + (P @ pi.unsqueeze(-1)).squeeze(-1) / tau, -1)
    br_min = torch.softmax(mu.log() - (P.transpose(-1, -2) @ pi.unsqueeze(-1)).squeeze(-1) / tau, -1)
    brute = J(P, br_max, pi, mu, tau) - J(P, pi, br_min, mu, tau)
    assert torch.allclose(gap, brute, atol=1e-12)

    # They really are best responses: no random deviation does better.
    others = random_policies((500, 6, 8), seed=9)
    assert (J(P, others, pi, mu, tau) <= J(P, br_max, pi, mu, tau) + 1e-12).all()
    assert (J(P, pi, others, mu, tau) >= J(P, pi, br_min, mu, tau) - 1e-12).all()

    # Zero exactly at the regularized NE.
    assert regularized_duality_gap(P, regularized_nash(P, mu, tau), mu, tau).abs().max() < 1e-12


def test_kl_helper():
    p = torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64)
    assert kl(p, p).item() == 0.0
    assert kl(p, torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)).item() == float("inf")
