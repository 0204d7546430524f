import pytest
import torch

from lit_nash.algorithms import INPO, OnlineIPO
from lit_nash.algorithms.simulate import simulate

from .exact import gaps, reg_gaps


def test_converges_to_the_regularized_equilibrium_only(comal):
    """INPO's last iterate reaches π*_τ; its original-game gap stays constant (COMAL's point)."""
    sim = simulate(INPO(eta=1.0, tau=0.1), comal, 1000, record_every=100)
    assert reg_gaps(comal, sim, 0.1)[-1] < 1e-10
    assert gaps(comal, sim)[-1] == pytest.approx(0.0245, abs=1e-4)


def test_paper_parametrization_is_the_omd_operator(comal):
    """π' ∝ μ^(τ_p/η_p)·π^(1−τ_p/η_p)·exp(P·π/η_p) with eta = 1/η_p, tau = τ_p."""
    eta_p, ratio = 0.5, 1 / 3
    sim = simulate(INPO(eta=1 / eta_p, tau=ratio * eta_p), comal, 1, record_every=1)
    pi0 = torch.full((1, 3), 1 / 3, dtype=torch.float64)
    expected = torch.softmax(torch.log(pi0) + (comal @ pi0.unsqueeze(-1)).squeeze(-1) / eta_p, -1)
    torch.testing.assert_close(sim.log_pi.exp(), expected, rtol=0, atol=1e-15)
    omd = simulate(OnlineIPO(eta=1 / eta_p, tau=ratio * eta_p), comal, 5)
    torch.testing.assert_close(simulate(INPO(eta=1 / eta_p, tau=ratio * eta_p), comal, 5).log_pi, omd.log_pi)


def test_ratio_above_one_is_rejected():
    with pytest.raises(ValueError, match="eta\\*tau"):
        INPO(eta=20, tau=0.1)
