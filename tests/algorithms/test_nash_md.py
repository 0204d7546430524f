from lit_nash.algorithms import NashMD
from lit_nash.algorithms.simulate import simulate

from .exact import reg_gaps


def test_constant_step_stops_short_of_the_regularized_equilibrium(comal):
    """§2.2: at constant η the fixed point is biased; reg gap plateaus at ~7e-5 (η = 1), ~6e-7 (η = 0.1)."""
    plateaus = {}
    for eta in (1.0, 0.1):
        curve = reg_gaps(comal, simulate(NashMD(eta=eta, tau=0.1), comal, 20_000, record_every=1000), 0.1)
        assert curve[-1] > 1e-7, "Nash-MD at constant η must not reach π*_τ"
        assert abs(curve[-1] - curve[-5]) < 1e-3 * curve[-1], "it has converged: to the wrong point"
        plateaus[eta] = curve[-1].item()
    assert 5e-5 < plateaus[1.0] < 1e-4
    assert 3e-7 < plateaus[0.1] < 1e-6  # smaller η, smaller bias: it only vanishes as η → 0


def test_mixture_coefficient_overrides_eta_tau():
    assert NashMD(eta=0.1, tau=0.1).alpha == 0.1 * 0.1
    assert NashMD(eta=0.1, tau=0.1, mixture_coef=0.125).alpha == 0.125
