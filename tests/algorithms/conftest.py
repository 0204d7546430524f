"""Exact games shared by the per-algorithm convergence tests (ALGORITHMS.md §3 targets)."""

import pytest
import torch

from lit_nash.games import comal_cycle, egpo_random, regularized_nash


@pytest.fixture(scope="session")
def comal():
    return comal_cycle().P


@pytest.fixture(scope="session")
def egpo_games():
    """Seeded EGPO random 10×10 games with a N(0, 1) reference, τ = 0.01, and their exact π*_τ."""
    P = egpo_random(num_actions=10, num_games=10, seed=0).P
    ref = torch.randn(10, 10, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    tau = 0.01
    return P, ref, tau, regularized_nash(P, torch.softmax(ref, -1), tau)
