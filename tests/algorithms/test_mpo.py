from lit_nash.algorithms import MPO
from lit_nash.algorithms.simulate import simulate

from .exact import gaps


def test_magnet_updates_reach_the_original_equilibrium(comal):
    """§3 target 3: MPO (η = 1, τ = 0.1, magnet every 100 steps) reaches original gap < 1e-8 within 5000."""
    curve = gaps(comal, simulate(MPO(eta=1.0, tau=0.1, magnet_every=100), comal, 5000, record_every=100))
    assert curve[-1] < 1e-8
    assert curve[10] > 1e-5  # and it was a real descent: 2e-5 at t = 1000 per ALGORITHMS.md §2.7


def test_without_magnet_updates_it_is_mmd_and_stops_at_the_regularized_gap(comal):
    curve = gaps(comal, simulate(MPO(eta=1.0, tau=0.1, magnet_every=None), comal, 2000, record_every=100))
    assert abs(curve[-1] - 0.0245) < 1e-4


def test_magnet_update_every_step_degenerates_to_mwu(comal):
    curve = gaps(comal, simulate(MPO(eta=1.0, tau=0.1, magnet_every=1), comal, 2000, record_every=100))
    assert curve[-5:].min() > 0.1


def test_schedule_counts_steps_and_refreshes_the_magnet(comal):
    algo = MPO(eta=1.0, tau=0.1, magnet_every=3)
    simulate(algo, comal, 7)
    assert algo.step == 7
    assert algo.state_dict() == {"step": 7}
