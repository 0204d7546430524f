"""Exact games shared by the per-algorithm convergence tests (ALGORITHMS.md §3 targets)."""

import pytest
import torch

from lit_nash.games import comal_cycle, egpo_random, regularized_nash
from lit_nash.games.token import token_game
from lit_nash.models import tiny_causal_lm
from lit_nash.policy.causal_lm import CausalLMPolicy


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


@pytest.fixture(scope="session")
def enumerable_lm(tmp_path_factory):
    """A tiny causal LM on the token game, its weights moved away from the reference (the starting weights),
    and every response it can emit (at most 2 tokens of a 12-token vocabulary: 133 per prompt), for each
    prompt: (policy, prompt (N,), responses (N, 133, 2)). Expectations over π_θ are then exact sums."""
    game = token_game()
    policy = CausalLMPolicy(str(tiny_causal_lm(tmp_path_factory.mktemp("lm"), game.vocabulary())), game=game,
                            max_new_tokens=2)
    with torch.no_grad():
        g = torch.Generator().manual_seed(0)
        for p in policy.model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * p.abs().mean())
    eos, pad = policy.eos_id, policy.pad_id
    tokens = [t for t in range(policy.model.config.vocab_size) if t != eos]
    seqs = [[eos, pad]] + [[t, eos] for t in tokens] + [[a, b] for a in tokens for b in tokens]
    N = game.num_prompts
    prompt, responses = torch.arange(N), torch.tensor(seqs).expand(N, -1, -1)
    total = policy.response_log_probs(prompt, responses).exp().sum(-1).detach()
    torch.testing.assert_close(total, torch.ones(N), rtol=0, atol=1e-5)  # the enumeration is complete
    return policy, prompt, responses
