"""Exact game metrics of the policy, when the game's equilibrium is computable (matrix and token games).

Definitions (ALGORITHMS.md §3), each averaged over the prompts (games) of the run:

* ``game/duality_gap``      2·max_y (Pπ)_y − 1 of the original game (0 exactly at a Nash equilibrium)
* ``game/reg_duality_gap``  2τ·log Σ μ·exp(Pπ/τ) − 1 + 2τ·KL(π‖μ), μ the reference (0 exactly at π*_τ(μ))
* ``game/exploitability``   max_y P(y ≻ π) − ½
* ``game/kl_to_ne``         KL(π* ‖ π), π* the LP equilibrium (one NE when it is not unique)
* ``game/invalid_mass``     (LM policies) probability of responses outside the game's response set; the
                            game counts them as one "invalid" action that loses to every response

The papers contrast the *last* iterate (the policy now) with the *average* iterate π̄_t = (1/t)·Σ_{s≤t} π_s,
the uniform mixture of the policies after each completed iteration (an EGPO or Nash-MP iteration is several
optimizer steps; exact play's iteration is one). ``game/avg_duality_gap``, ``game/avg_reg_duality_gap``,
``game/avg_exploitability`` and ``game/avg_kl_to_ne`` are the same metrics of π̄_t; π̄_t is accumulated after
every iteration (not only on logging steps) and kept in the checkpoint, so a resumed run's average is the
uninterrupted run's.

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


def game_metrics(P: Tensor, ne: Tensor, log_pi: Tensor, log_mu: Tensor, tau: float, prefix: str = "game/") -> dict[str, Tensor]:
    pi, mu = log_pi.exp(), log_mu.exp()
    return {
        f"{prefix}duality_gap": duality_gap(P, pi).mean(),
        f"{prefix}reg_duality_gap": regularized_duality_gap(P, pi, mu, tau).mean(),
        f"{prefix}exploitability": exploitability(P, pi).mean(),
        f"{prefix}kl_to_ne": kl_to_nash(P, pi, ne=ne).mean(),
    }


def completes_iteration(trainer: L.Trainer, pl_module: L.LightningModule) -> bool:
    """Whether the optimizer step just taken ended one of the algorithm's iterations (the iterate the
    papers average); the algorithm is the module's, read by duck typing (metrics sit above algorithms)."""
    algorithm = getattr(pl_module, "algorithm", None)
    per = algorithm.steps_per_iteration(pl_module.sampled) if algorithm is not None else 1
    return trainer.global_step % per == 0


class GameMetrics(L.Callback):
    """Logs the exact gaps of the policy after each step; ``tau`` is the τ of the regularized gap."""

    def __init__(self, P: Tensor, tau: float):
        """``P`` is the game's preference tensor: the ground truth, whatever preference model trains the policy."""
        if not tau > 0:
            raise ValueError(f"metrics tau must be > 0, got {tau}")
        self.tau = tau
        self.P = P
        self.ne = nash_equilibrium(P)
        self.total: Tensor | None = None  # Σ π_s over completed iterations (prompts, A), float64
        self.count = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        network = pl_module.network
        log_pi = None
        if completes_iteration(trainer, pl_module):
            log_pi = network.log_probs().detach()
            pi = log_pi.double().exp()
            self.total = pi if self.total is None else self.total.to(pi.device) + pi
            self.count += 1
        if not is_logging_step(trainer):
            return
        log_pi = network.log_probs() if log_pi is None else log_pi
        metrics = {**game_metrics(*self._truth(pl_module), log_pi, network.snapshot("ref"), self.tau),
                   **self._average(pl_module, network)}
        pl_module.log("game/duality_gap", metrics.pop("game/duality_gap"), prog_bar=True, batch_size=1)
        pl_module.log_dict(metrics, batch_size=1)
        if hasattr(network, "invalid_mass"):  # an LM's mass outside the game's responses
            pl_module.log("game/invalid_mass", float(log_pi[:, -1].exp().mean()), batch_size=1)

    def _average(self, pl_module: L.LightningModule, network) -> dict[str, Tensor]:
        """The metrics of the average iterate π̄ (none before the first iteration completes)."""
        if not self.count:
            return {}
        log_avg = (self.total / self.count).log().to(network.snapshot("ref").dtype)
        return game_metrics(*self._truth(pl_module), log_avg, network.snapshot("ref"), self.tau, prefix="game/avg_")

    def state_dict(self) -> dict:
        return {"count": self.count, **({"total": self.total.cpu()} if self.total is not None else {})}

    def load_state_dict(self, state_dict: dict) -> None:
        self.count = int(state_dict.get("count", 0))
        self.total = state_dict.get("total")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The last step always reaches the logger, whatever ``log_every_n_steps`` is."""
        if trainer.logger is not None and not is_logging_step(trainer):
            trainer.logger.log_metrics(self.final(pl_module), step=trainer.global_step - 1)

    def _truth(self, pl_module: L.LightningModule) -> tuple[Tensor, Tensor]:
        return self.P.to(pl_module.device), self.ne.to(pl_module.device)

    @torch.no_grad()
    def final(self, pl_module: L.LightningModule) -> dict[str, float]:
        network = pl_module.network
        m = {**game_metrics(*self._truth(pl_module), network.log_probs(), network.snapshot("ref"), self.tau),
             **self._average(pl_module, network)}
        final = {k: float(v) for k, v in m.items()}
        if hasattr(network, "invalid_mass"):
            final["game/invalid_mass"] = float(network.invalid_mass())
        return final
