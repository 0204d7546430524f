"""The exact preference oracle of a token game: decode two LM responses to words, read P off the game.

The oracle decodes token ids with **its own** tokenizer, loaded from the model directory by path, never
with the policy's tokenizer object: a preference model must not share state with the policy it judges
(here it keeps the game's ground truth independent of whatever the policy does to its tokenizer).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from lit_nash.games.token import TokenGame
from lit_nash.preference.game import GameOracle


class TokenGameOracle(GameOracle):
    """P(y ≻ y' | x) for token-id responses; ``win_rates`` (exact P·π over actions) is the game oracle's."""

    def __init__(self, game: TokenGame, tokenizer_path: str | Path):
        super().__init__(game)
        from transformers import AutoTokenizer

        path = Path(tokenizer_path)
        if not path.exists():
            raise FileNotFoundError(f"token game oracle: tokenizer directory {str(path)!r} does not exist")
        self.game = game
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        if self.tokenizer.eos_token_id is None:
            raise ValueError(f"token game oracle: the tokenizer in {str(path)!r} has no EOS token")
        self._special = set(self.tokenizer.all_special_ids)
        self._actions: dict[tuple[int, ...], int] = {}  # decoded responses, memoized

    def words(self, ids: list[int]) -> tuple[str, ...] | None:
        """The words of one response (ids before the first EOS), or None if it has no EOS or a special token."""
        eos = self.tokenizer.eos_token_id
        if eos not in ids:
            return None
        ids = ids[: ids.index(eos)]
        if any(i in self._special for i in ids):
            return None
        return tuple(self.tokenizer.decode(ids, clean_up_tokenization_spaces=False).split())

    def action_indices(self, responses: Tensor) -> Tensor:
        """Game action of every response (..., T) → (...) long; the invalid action for non-responses."""
        flat = responses.reshape(-1, responses.shape[-1]).tolist()
        out = []
        for ids in flat:
            key = tuple(ids)
            if key not in self._actions:
                if len(self._actions) > 100_000:  # a memo, not a leak: long random outputs rarely repeat
                    self._actions.clear()
                words = self.words(ids)
                self._actions[key] = self.game.invalid_index if words is None else self.game.action_index(words)
            out.append(self._actions[key])
        return torch.tensor(out, dtype=torch.long, device=self.P.device).reshape(responses.shape[:-1])

    def prob(self, prompt: Tensor, a: Tensor, b: Tensor) -> Tensor:
        """P(a ≻ b | prompt) for prompt indices (N,) and token-id responses a, b (N, m, T) → (N, m)."""
        if a.shape[:-1] != b.shape[:-1] or a.ndim != 3 or prompt.shape != a.shape[:1]:
            raise ValueError(
                f"prob expects prompt (N,), a and b (N, m, T); got {tuple(prompt.shape)}, "
                f"{tuple(a.shape)}, {tuple(b.shape)}"
            )
        prompt = prompt.to(self.P.device)
        ia, ib = self.action_indices(a), self.action_indices(b)
        p = self.P[prompt[:, None], ia, ib]  # range-checked, with the pair named, by lit_nash.rollout.label
        return p
