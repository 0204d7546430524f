"""The exact preference oracle of a matrix game: P(y ≻ y' | prompt) read off the game's matrix."""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor

from lit_nash.games import MatrixGame
from lit_nash.games import dynamics as D


class GameOracle(L.LightningModule):
    def __init__(self, game: MatrixGame):
        super().__init__()
        self.name = game.name
        self.register_buffer("P", game.P.clone())

    def win_rates(self, log_pi: Tensor) -> Tensor:
        """Exact P(y ≻ π) for every response y of every prompt: P·π, shape (prompts, K)."""
        return D.win_rates(self.P.to(log_pi.dtype), log_pi)

    def prob(self, prompt: Tensor, a: Tensor, b: Tensor) -> Tensor:
        """P(a ≻ b | prompt) for action indices a, b of shape (N, m) → (N, m)."""
        return self.P[prompt.unsqueeze(-1), a, b]
