"""Matrix games: validation messages, and that every generator yields the game it claims."""

import numpy as np
import pytest
import torch

from lit_nash.games import (
    MatrixGame,
    bt_mixture,
    comal_cycle,
    egpo_random,
    matrix,
    nash_equilibrium,
    validate_preference_matrix,
    weighted_rps,
)


def assert_preference_matrix(P: torch.Tensor) -> None:
    assert P.dtype == torch.float64
    assert torch.allclose(P + P.transpose(-1, -2), torch.ones_like(P), atol=1e-12)
    assert ((P >= 0) & (P <= 1)).all()
    assert torch.allclose(torch.diagonal(P, dim1=-2, dim2=-1), torch.full(P.shape[:-1], 0.5, dtype=torch.float64))


# ------------------------------------------------------------------------------------------ validation


def test_validate_accepts_list_numpy_torch_and_returns_float64():
    P = [[0.5, 0.3], [0.7, 0.5]]
    for given in (P, np.array(P, dtype=np.float32), torch.tensor(P, dtype=torch.float32)):
        out = validate_preference_matrix(given)
        assert isinstance(out, torch.Tensor) and out.dtype == torch.float64
        assert torch.allclose(out, torch.tensor(P, dtype=torch.float64), atol=1e-7)
    batch = validate_preference_matrix([P, [[0.5, 0.9], [0.1, 0.5]]])
    assert batch.shape == (2, 2, 2)


def test_validate_rejects_non_square():
    with pytest.raises(ValueError, match=r"must be square, got shape \(3, 4\)"):
        validate_preference_matrix(np.full((3, 4), 0.5))
    with pytest.raises(ValueError, match=r"must be square, got shape \(3,\)"):
        validate_preference_matrix([0.5, 0.5, 0.5])


def test_validate_rejects_nan_with_index():
    P = np.full((3, 3), 0.5)
    P[0, 2] = np.nan
    with pytest.raises(ValueError, match=r"non-finite entries \(nan at \[0, 2\]\)"):
        validate_preference_matrix(P)
    P = np.full((2, 3, 3), 0.5)
    P[1, 2, 0] = np.inf
    with pytest.raises(ValueError, match=r"non-finite entries \(inf at \[1, 2, 0\]\)"):
        validate_preference_matrix(P)


def test_validate_rejects_entries_outside_unit_interval():
    P = np.full((3, 3), 0.5)
    P[0, 2], P[2, 0] = 1.3, -0.3
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\], got 1\.3 at \[0, 2\]"):
        validate_preference_matrix(P)


def test_validate_rejects_non_complementary():
    P = np.full((3, 3), 0.5)
    P[0, 2], P[2, 0] = 0.6, 0.6
    with pytest.raises(ValueError, match=r"P \+ Pᵀ = 1 \(within 1e-06\): P\[0, 2\] \+ P\[2, 0\] = 1\.2"):
        validate_preference_matrix(P)
    # A violation within atol passes; a looser atol is honoured.
    P[0, 2] = 0.4 + 1e-8
    validate_preference_matrix(P)
    P[0, 2] = 0.45
    validate_preference_matrix(P, atol=0.1)


def test_validate_rejects_non_complementary_in_batch_with_full_index():
    P = np.full((2, 3, 3), 0.5)
    P[1, 0, 1] = 0.1
    with pytest.raises(ValueError, match=r"P\[1, 0, 1\] \+ P\[1, 1, 0\] = 0\.6"):
        validate_preference_matrix(P)


# ------------------------------------------------------------------------------------------ MatrixGame


def test_matrix_game_single_matrix_becomes_batch_of_one():
    game = matrix([[0.5, 0.2], [0.8, 0.5]], name="two")
    assert isinstance(game, MatrixGame) and game.name == "two"
    assert game.P.shape == (1, 2, 2)
    assert (game.num_prompts, game.num_actions) == (1, 2)


def test_matrix_game_batch_of_matrices():
    game = matrix([[[0.5, 0.2], [0.8, 0.5]], [[0.5, 0.6], [0.4, 0.5]]])
    assert (game.num_prompts, game.num_actions) == (2, 2)


def test_matrix_game_validates_in_post_init():
    with pytest.raises(ValueError, match="P \\+ Pᵀ = 1"):
        MatrixGame(P=torch.tensor([[0.5, 0.2], [0.2, 0.5]]), name="bad")
    with pytest.raises(ValueError, match="shape"):
        MatrixGame(P=torch.full((2, 2, 3, 3), 0.5), name="too many dims")


# ------------------------------------------------------------------------------------------ generators


@pytest.mark.parametrize(
    "game",
    [comal_cycle(), egpo_random(), egpo_random(7, num_games=4, seed=3), weighted_rps(), weighted_rps((1.0, 0.5, 0.0)),
     bt_mixture(), bt_mixture(num_actions=5, scale=2.0)],
    ids=lambda g: g.name,
)
def test_generators_yield_valid_games(game):
    assert isinstance(game, MatrixGame)
    assert game.P.ndim == 3
    assert_preference_matrix(game.P)


def test_comal_cycle_matrix():
    game = comal_cycle()
    expected = torch.tensor([[0.5, 0.1, 0.8], [0.9, 0.5, 0.1], [0.2, 0.9, 0.5]], dtype=torch.float64)
    assert torch.equal(game.P[0], expected)


def test_egpo_random_shape_and_reproducibility():
    a, b, c = egpo_random(10, 3, seed=0), egpo_random(10, 3, seed=0), egpo_random(10, 3, seed=1)
    assert a.P.shape == (3, 10, 10) and (a.num_prompts, a.num_actions) == (3, 10)
    assert torch.equal(a.P, b.P)
    assert not torch.allclose(a.P, c.P)
    assert not torch.allclose(a.P[0], a.P[1])  # games in one batch are independent draws
    lower = torch.tril(a.P, diagonal=-1)
    assert ((lower > 0) & (lower < 1)).sum() == 3 * 45  # every strictly-lower entry drawn from U(0, 1)


def test_egpo_random_does_not_touch_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    egpo_random(5, seed=7)
    assert torch.equal(torch.rand(3), expected)


def test_weighted_rps_edges():
    P = weighted_rps((1.0, 0.5, 0.2)).P[0]
    rock, paper, scissors = 0, 1, 2
    assert P[rock, scissors] == pytest.approx(1.0)
    assert P[scissors, paper] == pytest.approx(0.75)
    assert P[paper, rock] == pytest.approx(0.6)
    uniform = nash_equilibrium(weighted_rps().P)[0]
    assert torch.allclose(uniform, torch.full((3,), 1 / 3, dtype=torch.float64), atol=1e-9)


def test_weighted_rps_rejects_bad_weights():
    with pytest.raises(ValueError, match=r"weights must lie in \[0, 1\], got 1\.5 at \[1\]"):
        weighted_rps((1.0, 1.5, 1.0))
    with pytest.raises(ValueError, match="3 weights"):
        weighted_rps((1.0, 1.0))


def test_bt_mixture_default_is_intransitive():
    game = bt_mixture()
    P = game.P[0]
    # Every action is beaten by some other action, so none is a Condorcet winner ...
    assert ((P > 0.5).sum(dim=0) >= 1).all()
    # ... and the NE mixes over all of them (uniform, by the cyclic symmetry).
    ne = nash_equilibrium(game.P)[0]
    assert (ne > 0.1).all()
    assert torch.allclose(ne, torch.full((3,), 1 / 3, dtype=torch.float64), atol=1e-9)
    # Each annotator alone is transitive: a single Bradley–Terry model has a pure NE.
    single = bt_mixture(rewards=[[4.0, 0.0, -4.0]], weights=[1.0])
    assert torch.allclose(nash_equilibrium(single.P)[0], torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))


def test_bt_mixture_custom_rewards_and_validation():
    game = bt_mixture(rewards=[[1.0, 0.0], [0.0, 1.0]], weights=[0.75, 0.25])
    expected = 0.75 * torch.sigmoid(torch.tensor(1.0)) + 0.25 * torch.sigmoid(torch.tensor(-1.0))
    assert game.P[0, 0, 1].item() == pytest.approx(expected.item())
    with pytest.raises(ValueError, match="non-negative and sum to 1"):
        bt_mixture(rewards=[[1.0, 0.0], [0.0, 1.0]], weights=[0.5, 0.6])
    with pytest.raises(ValueError, match="non-negative and sum to 1"):
        bt_mixture(rewards=[[1.0, 0.0], [0.0, 1.0]], weights=[1.5, -0.5])
    with pytest.raises(ValueError, match="one weight per annotator"):
        bt_mixture(rewards=[[1.0, 0.0], [0.0, 1.0]], weights=[1.0])
