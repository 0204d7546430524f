"""Token games: preference games whose responses are short word sequences a causal LM can emit.

The responses of a prompt are every sequence of 1..``max_len`` words from a small vocabulary, each
followed by EOS; anything else the LM emits (a prompt word, a special token, too many words, no EOS) is
one extra **invalid** action that loses to every valid response. The action set is finite, so the LM's
exact response distribution and the game's exact equilibrium are both computable (correctness rung 4).

The preference over valid responses is a per-prompt population of Bradley–Terry annotators over text
features. Annotator a likes word a and dislikes word a+1 (mod W), position-weighted so that word order
matters: each annotator is transitive, the population is a Condorcet cycle (as in rock-paper-scissors)
and the prompt-dependent annotator weights move each prompt's mixed equilibrium around.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from scipy.special import expit
from torch import Tensor

from lit_nash.games.matrix import validate_preference_matrix


@dataclass
class TokenGame:
    """Prompts, the enumerated valid responses, and P (prompts, A, A) with A = #responses + 1 (invalid last)."""

    prompts: list[str]
    responses: list[tuple[str, ...]]
    P: Tensor
    name: str = "token_game"
    _index: dict[tuple[str, ...], int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.responses = [tuple(r) for r in self.responses]
        self.P = validate_preference_matrix(self.P)
        A = len(self.responses) + 1
        if self.P.shape != (len(self.prompts), A, A):
            raise ValueError(
                f"TokenGame P must have shape (prompts, responses + 1, responses + 1) = "
                f"({len(self.prompts)}, {A}, {A}), got {tuple(self.P.shape)}"
            )
        if any(len(r) == 0 for r in self.responses):
            raise ValueError("TokenGame responses must be non-empty word sequences")
        self._index = {r: i for i, r in enumerate(self.responses)}
        if len(self._index) != len(self.responses):
            raise ValueError("TokenGame responses must be distinct")

    @property
    def num_prompts(self) -> int:
        return self.P.shape[0]

    @property
    def num_actions(self) -> int:
        return self.P.shape[-1]

    @property
    def num_responses(self) -> int:
        """Valid responses per prompt: the game's size (the invalid action is not one)."""
        return len(self.responses)

    @property
    def invalid_index(self) -> int:
        return self.num_actions - 1

    def vocabulary(self) -> list[str]:
        """Every word a tokenizer for this game needs: prompt words, then response words (deduplicated)."""
        words = [w for p in self.prompts for w in p.split()] + [w for r in self.responses for w in r]
        return list(dict.fromkeys(words))

    def action_index(self, words: Sequence[str]) -> int:
        """The action of a decoded response (its words before EOS); anything that is not a response is invalid."""
        return self._index.get(tuple(words), self.invalid_index)


def _features(responses: list[tuple[str, ...]], words: Sequence[str]) -> np.ndarray:
    """Position-weighted word counts (R, W): the word at position t counts 1/(t+1), so order matters."""
    col = {w: j for j, w in enumerate(words)}
    F = np.zeros((len(responses), len(words)))
    for i, r in enumerate(responses):
        for t, w in enumerate(r):
            F[i, col[w]] += 1.0 / (t + 1)
    return F


def token_game(
    num_prompts: int = 4,
    words: Sequence[str] = ("a", "b", "c"),
    max_len: int = 2,
    num_annotators: int | None = None,
    scale: float = 3.0,
    length_coef: float = 0.5,
    dirichlet_share: float = 0.2,
    seed: int = 0,
) -> TokenGame:
    """A token game with an intransitive text-level preference (a Hydra ``_target_``).

    Prompts are "say 0" … "say {num_prompts-1}". Annotator a (of ``num_annotators``, default one per
    word, cycling over the W words) rewards ``scale``·(f(word_a) − f(word_{a+1 mod W})) +
    ``length_coef``·ℓ_x·len, with f the position-weighted count and ℓ_x ~ N(0, 1) one length taste per
    prompt. Per prompt, the annotator weights are (1 − s)·uniform + s·Dirichlet(1) with s =
    ``dirichlet_share``, seeded. With s = 0.2 no annotator holds a majority (for ≥ 3 annotators), and with
    ``scale`` ≳ 3 each annotator's vote is nearly decisive, so the word-level Condorcet cycle survives in
    the population and every prompt has a mixed NE (at ``scale`` = 1 the population is nearly transitive).
    """
    words = [str(w) for w in words]
    if len(set(words)) != len(words) or len(words) < 3:
        raise ValueError(f"token_game needs at least 3 distinct words for an intransitive preference, got {words}")
    num_annotators = len(words) if num_annotators is None else int(num_annotators)
    if num_prompts < 1 or max_len < 1 or num_annotators < 1:
        raise ValueError("token_game needs num_prompts, max_len and num_annotators ≥ 1")
    if not (np.isfinite(float(scale)) and np.isfinite(float(length_coef))):
        raise ValueError(f"token_game scale and length_coef must be finite, got {scale} and {length_coef}")
    if not 0.0 <= dirichlet_share <= 1.0:
        raise ValueError(f"token_game dirichlet_share must lie in [0, 1], got {dirichlet_share}")
    responses = [r for n in range(1, max_len + 1) for r in itertools.product(words, repeat=n)]
    F = _features(responses, words)  # (R, W)
    length = np.array([len(r) for r in responses], dtype=np.float64)
    W = len(words)
    direction = np.zeros((num_annotators, W))
    for a in range(num_annotators):
        direction[a, a % W] += 1.0
        direction[a, (a + 1) % W] -= 1.0
    rng = np.random.default_rng(seed)
    R, A = len(responses), len(responses) + 1
    P = np.full((num_prompts, A, A), 0.5)
    for x in range(num_prompts):
        weights = (1 - dirichlet_share) / num_annotators + dirichlet_share * rng.dirichlet(np.ones(num_annotators))
        taste = rng.standard_normal()
        r = scale * F @ direction.T + length_coef * taste * length[:, None]  # (R, annotators)
        diff = r[:, None, :] - r[None, :, :]
        P[x, :R, :R] = (weights * expit(diff)).sum(-1)
        P[x, :R, R] = 1.0  # every valid response beats the invalid action
        P[x, R, :R] = 0.0
    prompts = [f"say {i}" for i in range(num_prompts)]
    return TokenGame(prompts=prompts, responses=responses, P=torch.from_numpy(P))
