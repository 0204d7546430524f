import pytest

from lit_nash.algorithms import OnlineIPO
from lit_nash.algorithms.simulate import simulate

from .exact import gaps, kl_curve, reg_gaps


def test_reaches_the_regularized_equilibrium_on_the_comal_cycle(comal):
    """§3 target 1: regularized gap to round-off; the original gap stays at π*_τ's 0.0245."""
    sim = simulate(OnlineIPO(eta=1.0, tau=0.1), comal, 1000, record_every=100)
    assert reg_gaps(comal, sim, 0.1)[-1] < 1e-10
    assert gaps(comal, sim)[-1] == pytest.approx(0.0245, abs=1e-4)


def test_single_call_does_not_converge_at_small_tau(egpo_games):
    """§2.11: at τ = 0.01, η = 1 single-call OMD does not converge (EGPO's two calls do, test_egpo)."""
    P, ref, tau, star = egpo_games
    sim = simulate(OnlineIPO(eta=1.0, tau=tau), P, 3000, ref=ref, record_every=100)
    assert kl_curve(star, sim)[-10:].min() > 1e-2


def test_variant_is_validated():
    with pytest.raises(ValueError, match="variant must be 1 or 2"):
        OnlineIPO(variant=3)
