"""Matrix preference games: P[i, j] = Pr(i ≻ j) with P + Pᵀ = 1 (ALGORITHMS.md §1).

A ``MatrixGame`` holds a batch of B independent games of K actions each, P of shape (B, K, K). The
framework calls each leading game a *prompt*: a tabular policy keeps one softmax per prompt, so a batch of
games is a batch of prompts. The generators below are Hydra ``_target_``s (plain keyword arguments).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from lit_nash.validate import is_integer


def _index(t: Tensor) -> list[int]:
    """Index of the first True entry of a boolean tensor (row-major order)."""
    return [int(i) for i in t.nonzero()[0]]


def _fmt(idx: Sequence[int]) -> str:
    return "[" + ", ".join(str(i) for i in idx) + "]"


def validate_preference_matrix(P, atol: float = 1e-6) -> Tensor:
    """Check that P (..., K, K) is a batch of preference matrices and return it as float64.

    Fails early with the first offending index, because a malformed P silently breaks every gap and
    equilibrium computed from it (e.g. P + Pᵀ ≠ 1 makes the game non-symmetric and its value ≠ ½).
    """
    if isinstance(P, Tensor):
        P = P.detach().to(torch.float64)
    else:
        P = torch.as_tensor(np.asarray(P, dtype=np.float64))
    if P.ndim < 2 or P.shape[-1] != P.shape[-2]:
        raise ValueError(f"preference matrix must be square, got shape {tuple(P.shape)}")
    if P.shape[-1] == 0:
        raise ValueError(f"preference matrix must have at least one action, got shape {tuple(P.shape)}")
    # Fast path, one reduction and one host sync for a valid P (the metrics check P on every logged step):
    # |P − ½| ≤ ½ + atol is the range test below, and NaN or ±inf fail it. Only an invalid P reaches the
    # entry-by-entry checks that name the first offending index.
    if bool(((P - 0.5).abs().amax() <= 0.5 + atol) & ((P + P.mT - 1).abs().amax() <= atol)):
        return P
    bad = ~torch.isfinite(P)
    if bad.any():
        idx = _index(bad)
        raise ValueError(f"preference matrix has non-finite entries ({P[tuple(idx)].item()} at {_fmt(idx)})")
    bad = (P < -atol) | (P > 1 + atol)
    if bad.any():
        idx = _index(bad)
        raise ValueError(f"preference matrix entries must lie in [0, 1], got {P[tuple(idx)].item():g} at {_fmt(idx)}")
    S = P + P.transpose(-1, -2)
    bad = (S - 1).abs() > atol
    if bad.any():
        idx = _index(bad)
        *b, i, j = idx
        raise ValueError(
            f"preference matrix must satisfy P + Pᵀ = 1 (within {atol:g}): "
            f"P{_fmt(b + [i, j])} + P{_fmt(b + [j, i])} = {S[tuple(idx)].item():g}"
        )
    return P


@dataclass
class MatrixGame:
    """A batch of symmetric two-player preference games; P is (B, K, K), one game per prompt."""

    P: Tensor
    name: str = "matrix"

    def __post_init__(self) -> None:
        P = validate_preference_matrix(self.P)
        if P.ndim == 2:
            P = P.unsqueeze(0)
        if P.ndim != 3:
            raise ValueError(f"MatrixGame expects P of shape (K, K) or (B, K, K), got {tuple(P.shape)}")
        self.P = P

    @property
    def num_prompts(self) -> int:
        return self.P.shape[0]

    @property
    def num_actions(self) -> int:
        return self.P.shape[-1]

    @property
    def num_responses(self) -> int:
        """Responses per prompt: the game's size (every action is one)."""
        return self.num_actions


# ----------------------------------------------------------------------------------------- generators


def matrix(P, name: str = "matrix") -> MatrixGame:
    """A game from a user-given P: one K×K list of lists, or a list of such matrices (a batch)."""
    return MatrixGame(P=P, name=name)


def comal_cycle() -> MatrixGame:
    """COMAL's (Liu et al. 2024) intransitive 3-action game; its unique NE is (4/11, 3/11, 4/11)."""
    P = [[0.5, 0.1, 0.8], [0.9, 0.5, 0.1], [0.2, 0.9, 0.5]]
    return MatrixGame(P=P, name="comal_cycle")


def egpo_random(num_actions: int = 10, num_games: int = 1, seed: int = 0) -> MatrixGame:
    """EGPO's (Zhou et al. 2025) random games: strictly-lower entries ~ U(0, 1), upper = 1 − lowerᵀ, diag ½.

    Seeded with its own ``torch.Generator`` so the game does not depend on (or disturb) global RNG state.
    """
    if not (is_integer(num_actions) and is_integer(num_games)) or num_actions < 1 or num_games < 1:
        raise ValueError(f"need num_actions ≥ 1 and num_games ≥ 1, got {num_actions} and {num_games}")
    gen = torch.Generator().manual_seed(seed)
    U = torch.rand(num_games, num_actions, num_actions, generator=gen, dtype=torch.float64)
    lower = torch.tril(U, diagonal=-1)
    P = lower + torch.triu(1.0 - lower.transpose(-1, -2), diagonal=1)
    P = P + 0.5 * torch.eye(num_actions, dtype=torch.float64)
    return MatrixGame(P=P, name=f"egpo_random_k{num_actions}_s{seed}")


def weighted_rps(weights: Sequence[float] = (1.0, 1.0, 1.0)) -> MatrixGame:
    """Rock (0), paper (1), scissors (2) with P(winner ≻ loser) = ½(1 + w) per edge of the cycle.

    ``weights`` = (rock ≻ scissors, scissors ≻ paper, paper ≻ rock); w = 0 makes that pair a coin flip,
    so unequal weights move the NE away from uniform.
    """
    w = [float(x) for x in weights]
    if len(w) != 3:
        raise ValueError(f"weighted_rps needs 3 weights, got {len(w)}")
    for k, x in enumerate(w):
        if not 0.0 <= x <= 1.0:
            raise ValueError(f"weighted_rps weights must lie in [0, 1], got {x:g} at [{k}]")
    P = torch.full((3, 3), 0.5, dtype=torch.float64)
    for winner, loser, x in ((0, 2, w[0]), (2, 1, w[1]), (1, 0, w[2])):
        P[winner, loser] = 0.5 * (1.0 + x)
        P[loser, winner] = 0.5 * (1.0 - x)
    return MatrixGame(P=P, name="weighted_rps")


def bt_mixture(rewards=None, weights=None, num_actions: int = 3, scale: float = 4.0) -> MatrixGame:
    """A population of Bradley–Terry annotators: P = Σ_a w_a σ(r_a(i) − r_a(j)).

    Each annotator is transitive, but the population need not be. The default ``rewards`` are the K cyclic
    rotations of ``scale · linspace(1, −1, K)`` with uniform weights: a Condorcet cycle in which every
    action is beaten by a majority, so no single response is best and the NE is mixed.
    """
    if rewards is None:
        if not is_integer(num_actions) or num_actions < 2:
            raise ValueError(f"bt_mixture num_actions must be an integer >= 2, got {num_actions}")
        if not np.isfinite(float(scale)):
            raise ValueError(f"bt_mixture scale must be finite, got {scale}")
        num_actions = int(num_actions)
        base = scale * torch.linspace(1.0, -1.0, num_actions, dtype=torch.float64)
        r = torch.stack([torch.roll(base, a) for a in range(num_actions)])
    else:
        r = torch.as_tensor(np.asarray(rewards, dtype=np.float64))
        if r.ndim != 2:
            raise ValueError(f"bt_mixture rewards must have shape (annotators, actions), got {tuple(r.shape)}")
        if not torch.isfinite(r).all():
            raise ValueError("bt_mixture rewards must be finite")
    A = r.shape[0]
    if weights is None:
        w = torch.full((A,), 1.0 / A, dtype=torch.float64)
    else:
        w = torch.as_tensor(np.asarray(weights, dtype=np.float64))
        if w.shape != (A,):
            raise ValueError(f"bt_mixture needs one weight per annotator ({A}), got shape {tuple(w.shape)}")
        if (w < 0).any() or abs(w.sum().item() - 1.0) > 1e-6:
            raise ValueError(f"bt_mixture weights must be non-negative and sum to 1, got {w.tolist()}")
    P = torch.einsum("a,aij->ij", w, torch.sigmoid(r[:, :, None] - r[:, None, :]))
    return MatrixGame(P=P, name="bt_mixture")
