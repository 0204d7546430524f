"""Exact game metrics of the policy, when the game's equilibrium is computable (matrix and token games).

Definitions (ALGORITHMS.md §3), each averaged over the prompts (games) of the run:

* ``game/duality_gap``      2·max_y (Pπ)_y − 1 of the original game (0 exactly at a Nash equilibrium)
* ``game/reg_duality_gap``  2τ·log Σ μ·exp(Pπ/τ) − 1 + 2τ·KL(π‖μ), μ the reference (0 exactly at π*_τ(μ))
* ``game/exploitability``   max_y P(y ≻ π) − ½
* ``game/kl_to_ne``         KL(π* ‖ π), π* the LP equilibrium (one NE when it is not unique)
* ``game/invalid_mass``     (LM policies) probability of responses outside the game's response set; the
                            game counts them as one "invalid" action that loses to every response

They are computed on the steps the logger writes (every ``trainer.log_every_n_steps``) and at the last step.
"""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor

from lit_nash.games import duality_gap, exploitability, kl_to_nash, nash_equilibrium, regularized_duality_gap


def is_logging_step(trainer: L.Trainer) -> bool:
    """True on the steps whose metrics Lightning writes to the logger (every ``log_every_n_steps``):
    computing and logging on the others costs time and reaches nobody."""
    return trainer.global_step % trainer.log_every_n_steps == 0


def game_metrics(P: Tensor, ne: Tensor, log_pi: Tensor, log_mu: Tensor, tau: float) -> dict[str, Tensor]:
    pi, mu = log_pi.exp(), log_mu.exp()
    return {
        "game/duality_gap": duality_gap(P, pi).mean(),
        "game/reg_duality_gap": regularized_duality_gap(P, pi, mu, tau).mean(),
        "game/exploitability": exploitability(P, pi).mean(),
        "game/kl_to_ne": kl_to_nash(P, pi, ne=ne).mean(),
    }


class GameMetrics(L.Callback):
    """Logs the exact gaps of the policy after each step; ``tau`` is the τ of the regularized gap."""

    def __init__(self, P: Tensor, tau: float):
        """``P`` is the game's preference tensor: the ground truth, whatever preference model trains the policy."""
        if not tau > 0:
            raise ValueError(f"metrics tau must be > 0, got {tau}")
        self.tau = tau
        self.P = P
        self.ne = nash_equilibrium(P)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not is_logging_step(trainer):
            return
        network = pl_module.network
        metrics = game_metrics(*self._truth(pl_module), network.log_probs(), network.snapshot("ref"), self.tau)
        pl_module.log("game/duality_gap", metrics.pop("game/duality_gap"), prog_bar=True, batch_size=1)
        pl_module.log_dict(metrics, batch_size=1)
        if hasattr(network, "invalid_mass"):  # an LM's mass outside the game's responses
            pl_module.log("game/invalid_mass", network.invalid_mass(), batch_size=1)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The last step always reaches the logger, whatever ``log_every_n_steps`` is."""
        if trainer.logger is not None and not is_logging_step(trainer):
            trainer.logger.log_metrics(self.final(pl_module), step=trainer.global_step - 1)

    def _truth(self, pl_module: L.LightningModule) -> tuple[Tensor, Tensor]:
        return self.P.to(pl_module.device), self.ne.to(pl_module.device)

    @torch.no_grad()
    def final(self, pl_module: L.LightningModule) -> dict[str, float]:
        network = pl_module.network
        m = game_metrics(*self._truth(pl_module), network.log_probs(), network.snapshot("ref"), self.tau)
        final = {k: float(v) for k, v in m.items()}
        if hasattr(network, "invalid_mass"):
            final["game/invalid_mass"] = float(network.invalid_mass())
        return final
