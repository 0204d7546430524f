import torch

from lit_nash.algorithms import SPPO
from lit_nash.games import duality_gap
from lit_nash.algorithms.simulate import simulate

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
