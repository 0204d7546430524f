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

    def forward(self, prompt: Tensor, y: Tensor, y_other: Tensor) -> Tensor:
        """P(y ≻ y' | prompt) for index tensors of one shape."""
        return self.P[prompt, y, y_other]
