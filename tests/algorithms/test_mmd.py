import pytest

from lit_nash.algorithms import MMD
from lit_nash.algorithms.simulate import simulate

from .exact import gaps, reg_gaps


def test_reaches_the_regularized_equilibrium_on_the_comal_cycle(comal):
    sim = simulate(MMD(eta=1.0, tau=0.1), comal, 1000, record_every=100)
    assert reg_gaps(comal, sim, 0.1)[-1] < 1e-10
    assert gaps(comal, sim)[-1] == pytest.approx(0.0245, abs=1e-4)


def test_linear_rate_at_tau_point_one(comal):
    """MMD's linear rate KL ≤ (1+ητ)^(-t): the regularized gap falls at least that fast here."""
    curve = reg_gaps(comal, simulate(MMD(eta=1.0, tau=0.1), comal, 200, record_every=50), 0.1)
    assert curve[-1] < curve[0] * (1 + 0.1) ** -150
