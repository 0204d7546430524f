"""The algorithm object: what an NLHF method owns, and nothing else.

An algorithm is a Lightning ``Callback`` that the policy module calls into. It owns

* its hyperparameters (``eta`` step size, ``tau`` KL coefficient, in the log-space convention of
  ALGORITHMS.md §2.1; each algorithm's doc page maps them to its paper's parameters),
* the named snapshots it reads (``ref`` always exists; ``magnet``, ``anchor``, ``history`` ...),
* its exact update, composed from ``lit_nash.games.dynamics`` operators,
* its practical step on sampled responses (``rollout`` then ``loss``, composed from ``lit_nash.rollout``
  and ``lit_nash.algorithms.losses``), the same for a tabular policy and a causal LM, and
* its schedule (magnet updates, prox resets, history pushes), run after every step.

The same object drives the closed-form dynamics (``lit_nash.games.dynamics.simulate``) and the Lightning
``fit`` loop, so the schedule exists once. Its step counter is part of the checkpoint.

A policy, for the algorithm, is anything with ``log_probs()``, ``snapshot(name)``, ``has_snapshot(name)``,
``refresh_snapshot(name)``, ``push_snapshot(name, maxlen)`` and, for sampled play, ``sample``,
``response_log_probs``, ``optimize`` and ``preference`` (``lit_nash.policy.TabularPolicy``,
``lit_nash.policy.causal_lm.CausalLMPolicy``).
"""

from __future__ import annotations

import copy
import inspect
from functools import partial
from typing import Any, Callable, ClassVar

import lightning as L
import torch
from torch import Tensor

from lit_nash.sharding import parameters_at_rest

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
        self.round: dict[str, Tensor] | None = None  # the current round's rollout (iterative mode)

    # -- the math ------------------------------------------------------------------------------
    def exact_step(self, policy: Any, win_rates: WinRates) -> Tensor:
        """The next iterate's log-probabilities under exact expectations (shape of ``policy.log_probs()``)."""
        raise NotImplementedError

    def rollout(self, policy: Any, prompt: Tensor) -> dict[str, Tensor]:
        """Sample what the loss needs for these prompts, label it, and compute snapshot log-probs once."""
        raise NotImplementedError

    def loss(self, policy: Any, batch: dict[str, Tensor]) -> Tensor:
        """The practical loss on a rollout batch (differentiable in the policy's parameters)."""
        raise NotImplementedError

    def sampled_step(self, policy: Any, prompt: Tensor, new_round: bool = True) -> Tensor:
        """One step on sampled responses: rollout (once per round: the round's samples and their snapshot
        log-probs stay frozen for all its epochs), loss, optimizer step. Returns the loss."""
        if new_round or self.round is None:
            self.round = self.rollout(policy, prompt)
        return policy.optimize(partial(self.loss, policy), self.round)

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
        """The step counter, and the current round's rollout so that a resume mid-round trains on it."""
        return {"step": self.step} if self.round is None else {"step": self.step, "round": self.round}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.step = int(state_dict["step"])
        self.round = state_dict.get("round")

    def hparams(self) -> dict[str, Any]:
        """The constructor's arguments as set: exactly the keys of conf/algo/<name>.yaml."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]  # not step/round
        return {name: getattr(self, name) for name in names}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.hparams().items())
        return f"{type(self).__name__}({args})"


def _check_positive(key: str, value: float, algo: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"algo={algo}: {key} must be > 0, got {value}")


REDUCTIONS = ("sum", "mean")


def check_count(key: str, value: int, algo: str, minimum: int, what: str) -> int:
    """An integer count such as k (what it counts differs per algorithm: ``what`` says it)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or value < minimum:
        raise ValueError(f"algo={algo}: {key} must be an integer >= {minimum} ({what}), got {value}")
    return int(value)


def check_choice(key: str, value, choices, algo: str):
    if value not in choices:
        raise ValueError(f"algo={algo}: {key} must be one of {list(choices)}, got {value!r}")
    return value


def check_sampling(algo: str, temperature: float, top_k: int, prefix: str = "proposal_") -> None:
    """A proposal's sampling settings: temperature > 0, top_k an integer >= 0 (0 = off)."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(f"algo={algo}: {prefix}temperature must be > 0, got {temperature}")
    if isinstance(top_k, bool) or not isinstance(top_k, (int, float)) or int(top_k) != top_k or top_k < 0:
        raise ValueError(f"algo={algo}: {prefix}top_k must be an integer >= 0 (0 = off), got {top_k}")


def check_period(key: str, value: int | None, algo: str) -> int | None:
    """Reset periods are counted in steps: None/0 means never, otherwise an integer ≥ 1."""
    if value in (None, 0):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or value < 1:
        raise ValueError(f"algo={algo}: {key} must be an integer >= 1 (or null for never), got {value}")
    return int(value)


def training_state(policy: Any) -> dict[str, Any]:
    """A copy of the trainable parameters and the optimizer state: EGPO's and Nash-MP's return point."""
    return {
        "params": {n: p.detach().clone() for n, p in parameters_at_rest(policy).items() if p.requires_grad},
        "optimizer": copy.deepcopy(policy.optimizers().optimizer.state_dict()),
    }


def restore_training_state(policy: Any, state: dict[str, Any]) -> None:
    """Put parameters and optimizer state back bit for bit."""
    params = parameters_at_rest(policy)
    with torch.no_grad():
        for name, value in state["params"].items():
            params[name].copy_(value)
    policy.optimizers().optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))


def accumulate(loss_of: Callable[[dict], Tensor], batch: dict[str, Tensor], micro_batches: int,
               backward: Callable[[Tensor], None]) -> Tensor:
    """Backward the loss of ``batch`` in ``micro_batches`` slices of its prompts (gradient accumulation).

    Every value of a rollout batch is a tensor whose first dimension is the prompt. Slice c's loss is
    weighted by its share n_c/N of the prompts, so for a loss that averages over prompts the accumulated
    gradient is the full batch's (tested). Keys a loss adds to its batch (π_t's log-probs, kept for the
    later epochs of a round) are gathered back into ``batch``. Returns the (detached) batch loss.
    """
    if micro_batches == 1:
        loss = loss_of(batch)
        backward(loss)
        return loss.detach()
    n = len(batch["prompt"])
    if n < micro_batches:
        raise ValueError(f"policy.micro_batches={micro_batches} exceeds the {n} prompts of a step (per process)")
    bad = [k for k, v in batch.items() if not (isinstance(v, Tensor) and v.ndim >= 1 and len(v) == n)]
    if bad:
        raise ValueError(f"micro-batching needs per-prompt tensors; {bad} are not")
    slices = torch.arange(n).tensor_split(micro_batches)
    parts = [{k: v[idx.to(v.device)] for k, v in batch.items()} for idx in slices]
    total = 0.0
    for idx, part in zip(slices, parts):
        loss = loss_of(part) * (len(idx) / n)
        backward(loss)
        total = total + loss.detach()
    for key in parts[0].keys() - batch.keys():
        batch[key] = torch.cat([part[key] for part in parts])
    return total
