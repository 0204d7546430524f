"""The two-call step of EGPO (extragradient) and Nash-MP (mirror prox) in sampled play.

An iteration starts at θ_t. ``half_steps`` optimizer steps give the half-step policy θ_{t+½}; it is kept
as the snapshot ``half_step``, and θ_t and its optimizer state come back bit for bit. ``half_steps`` more
steps from θ_t, whose rollouts read the half step (EGPO samples from it, Nash-MP plays against it), end the
iteration. One iteration is 2·``half_steps`` optimizer steps, each its own training step (one step axis).

The saved θ_t lives in the checkpoint, so a run stopped between the two calls resumes exactly.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from lit_nash.algorithms.base import Algorithm

HALF_STEP = "half_step"


class TwoCallStep:
    def __init__(self, half_steps: int):
        self.half_steps = half_steps
        self.saved: dict[str, Any] | None = None  # θ_t and its optimizer state, during the first call
        self.second_call = False  # the rollouts of this phase read the half step

    def start(self, pl_module, global_step: int) -> None:
        """Before an optimizer step: at the start of an iteration, save θ_t and the optimizer state."""
        if global_step % (2 * self.half_steps) == 0 and self.saved is None:
            optimizer = pl_module.optimizers().optimizer
            params = pl_module.network.trainable_parameters()
            self.saved = {"params": [p.detach().clone() for p in params],
                          "optimizer": copy.deepcopy(optimizer.state_dict())}

    def end(self, pl_module, global_step: int) -> bool:
        """After an optimizer step (``global_step`` now counts it): at the end of the first call keep the half
        step and go back to θ_t; returns True when the iteration is complete."""
        into = global_step % (2 * self.half_steps)
        if into == self.half_steps:
            network = pl_module.network
            network.refresh_snapshot(HALF_STEP)
            with torch.no_grad():
                for p, value in zip(network.trainable_parameters(), self.saved["params"]):
                    p.copy_(value)
            pl_module.optimizers().optimizer.load_state_dict(self.saved["optimizer"])
            self.saved, self.second_call = None, True
        if into == 0:
            self.second_call = False
            return True
        return False

    def state_dict(self) -> dict[str, Any]:
        return {"second_call": self.second_call, **({"saved": self.saved} if self.saved is not None else {})}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.second_call = bool(state.get("second_call", False))
        self.saved = state.get("saved")


class TwoCallAlgorithm(Algorithm):
    """An algorithm whose sampled-play iteration is a ``TwoCallStep`` of ``half_steps`` optimizer steps per call
    (exact play takes its closed-form two-call step in one)."""

    uses_rounds = False  # samples from (or plays) its own half step every step

    def __init__(self, eta: float, tau: float | None, half_steps: int):
        super().__init__(eta, tau)
        self.two_call = TwoCallStep(half_steps)

    def steps_per_iteration(self, sampled):
        return 2 * self.two_call.half_steps if sampled else 1

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if pl_module.sampled:
            self.two_call.start(pl_module, trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if not pl_module.sampled or self.two_call.end(pl_module, trainer.global_step):
            self.end_step(pl_module.network)

    def state_dict(self):
        return {**super().state_dict(), "two_call": self.two_call.state_dict()}

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        self.two_call.load_state_dict(state_dict.get("two_call", {}))
