import pytest
import torch

from lit_nash.algorithms import INPO, MNPO
from lit_nash.algorithms.simulate import simulate

from .exact import gaps, reg_gaps


def test_population_of_past_iterates_reaches_the_regularized_equilibrium(comal):
    """The fixed point of l = r·log μ + (1−r)·Σλ_j·l + η·Pπ is π*_τ with τ = r/η, whatever the weights."""
    for weights in ([0.5, 0.5], [0.25, 0.75], [0.2, 0.3, 0.5]):
        sim = simulate(MNPO(eta=1.0, tau=0.1, history_weights=weights), comal, 2000, record_every=100)
        assert reg_gaps(comal, sim, 0.1)[-1] < 1e-10, weights
        assert gaps(comal, sim)[-1] == pytest.approx(0.0245, abs=1e-4)


def test_one_opponent_is_inpo(comal):
    mnpo = simulate(MNPO(eta=1.0, tau=0.1, history_weights=[1.0]), comal, 50)
    inpo = simulate(INPO(eta=1.0, tau=0.1), comal, 50)
    torch.testing.assert_close(mnpo.log_pi, inpo.log_pi, rtol=0, atol=1e-14)


@pytest.mark.parametrize("weights", [[-0.5, 1.5], [0.3, 0.3], []])
def test_history_weights_are_validated(weights):
    with pytest.raises(ValueError, match="history_weights"):
        MNPO(history_weights=weights)
