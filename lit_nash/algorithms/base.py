"""The algorithm object: what an NLHF method owns, and nothing else.

An algorithm is a Lightning ``Callback`` that the policy module calls into. It owns

* its hyperparameters (``eta`` step size, ``tau`` KL coefficient, in the log-space convention of
  ALGORITHMS.md §2.1; each algorithm's doc page maps them to its paper's parameters),
* the named snapshots it reads (``ref`` always exists; ``magnet``, ``anchor``, ``history`` ...),
* its exact update, composed from ``lit_nash.games.dynamics`` operators, and
* its schedule (magnet updates, prox resets, history pushes), run after every step.

The same object drives the closed-form dynamics (``lit_nash.games.dynamics.simulate``) and the Lightning
``fit`` loop, so the schedule exists once. Its step counter is part of the checkpoint.

A policy, for the algorithm, is anything with ``log_probs()``, ``snapshot(name)``,
``has_snapshot(name)``, ``refresh_snapshot(name)`` and ``push_snapshot(name, maxlen)``
(``lit_nash.policy.TabularPolicy``).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, ClassVar

import lightning as L
from torch import Tensor

WinRates = Callable[[Tensor], Tensor]
"""Maps log-policies (..., K) to win-rate vectors P·π (..., K): the exact preference oracle."""


class Algorithm(L.Callback):
    name: ClassVar[str] = "algorithm"

    def __init__(self, eta: float, tau: float | None = None):
        _check_positive("eta", eta, self.name)
        if tau is not None:
            _check_positive("tau", tau, self.name)
        self.eta = float(eta)
        self.tau = None if tau is None else float(tau)
        self.step = 0  # completed iterations

    # -- the math ------------------------------------------------------------------------------
    def exact_step(self, policy: Any, win_rates: WinRates) -> Tensor:
        """The next iterate's log-probabilities under exact expectations (shape of ``policy.log_probs()``)."""
        raise NotImplementedError

    def schedule(self, policy: Any) -> None:
        """Snapshot updates due after ``self.step`` completed steps. Default: none."""

    def prepare(self, policy: Any) -> None:
        """Take the snapshots the algorithm reads before its first step (skipped when resuming)."""

    # -- driving ---------------------------------------------------------------------------------
    def end_step(self, policy: Any) -> None:
        self.step += 1
        self.schedule(policy)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            self.prepare(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.end_step(pl_module)

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.step = int(state_dict["step"])

    def hparams(self) -> dict[str, Any]:
        """The constructor's arguments as set: exactly the keys of conf/algo/<name>.yaml."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {name: getattr(self, name) for name in names}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.hparams().items())
        return f"{type(self).__name__}({args})"


def _check_positive(key: str, value: float, algo: str) -> None:
    if not value > 0:
        raise ValueError(f"algo={algo}: {key} must be > 0, got {value}")


def check_period(key: str, value: int | None, algo: str) -> int | None:
    """Reset periods are counted in steps: None/0 means never, otherwise an integer ≥ 1."""
    if value in (None, 0):
        return None
    if int(value) != value or value < 1:
        raise ValueError(f"algo={algo}: {key} must be an integer >= 1 (or null for never), got {value}")
    return int(value)
