"""Preference games with a known ground truth: matrix games, their exact equilibria and gaps.

``dynamics`` holds the closed-form tabular operators the algorithms are checked against; ``equilibria``
the LP Nash equilibrium, the regularized NE and the gaps used as evaluation metrics.
"""

from lit_nash.games import dynamics
from lit_nash.games.equilibria import (
    duality_gap,
    exploitability,
    kl,
    kl_to_nash,
    nash_equilibrium,
    regularized_duality_gap,
    regularized_nash,
)
from lit_nash.games.token import TokenGame, token_game
from lit_nash.games.matrix import (
    MatrixGame,
    bt_mixture,
    comal_cycle,
    egpo_random,
    matrix,
    validate_preference_matrix,
    weighted_rps,
)

__all__ = [
    "MatrixGame",
    "TokenGame",
    "token_game",
    "bt_mixture",
    "comal_cycle",
    "duality_gap",
    "dynamics",
    "egpo_random",
    "exploitability",
    "kl",
    "kl_to_nash",
    "matrix",
    "nash_equilibrium",
    "regularized_duality_gap",
    "regularized_nash",
    "validate_preference_matrix",
    "weighted_rps",
]
