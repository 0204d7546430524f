"""The algorithm object: what an NLHF method owns, and nothing else.

An algorithm is a Lightning ``Callback``. It owns

* its hyperparameters (``eta`` step size, ``tau`` KL coefficient, in the log-space convention of
  ALGORITHMS.md §2.1; each algorithm's doc page maps them to its paper's parameters),
* its exact update (``exact_step``), composed from ``lit_nash.games.dynamics`` operators,
* its practical step on sampled responses: ``rollout`` (what to sample, which pairs to label, which
  snapshot log-probs to take, through the ``lit_nash.rollout.Rollouts`` service) and ``loss`` (of a
  ``Rollout`` and the policy's log-probs of its responses, composed from ``losses``), the same for a
  tabular policy and a causal LM,
* its schedule (magnet updates, prox resets, history pushes, the two-call step), run through Lightning
  hooks, on the snapshots of the policy network it trains (``lit_nash.policy.network.PolicyNetwork``).

The engine (``lit_nash.engine``) runs it; ``lit_nash.algorithms.simulate`` drives the same object's exact
dynamics without Lightning, so the schedule exists once. Its iteration counter is part of the checkpoint.

Every subclass with a ``name`` registers itself (``registry()``): the registry is what `conf/algo/`,
the sweeps, ``bench`` and the docs index are checked against.
"""

from __future__ import annotations

import importlib
import inspect
import math
import pkgutil
from pathlib import Path
from typing import Any, Callable, ClassVar

import lightning as L
from torch import Tensor

from lit_nash.games.dynamics import is_reset_step
from lit_nash.rollout import Rollout, Rollouts
from lit_nash.validate import choice, integer, period, positive

WinRates = Callable[[Tensor], Tensor]
"""Maps log-policies (..., K) to win-rate vectors P·π (..., K): the exact preference oracle."""

REDUCTIONS = ("sum", "mean")
MAX_K = 2**16  # samples per prompt: algo.k above it is refused at start-up
MAX_K_ALL_PAIRS = 2**12  # where all k(k-1)/2 pairs of a prompt's samples are labeled (SPPO, INPO, COMAL, MNPO)
_REGISTRY: dict[str, type["Algorithm"]] = {}


def registry() -> dict[str, type["Algorithm"]]:
    """Every algorithm by name: the modules of ``lit_nash.algorithms`` and any other imported subclass."""
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        importlib.import_module(f"{__package__}.{info.name}")
    return dict(_REGISTRY)


class Algorithm(L.Callback):
    name: ClassVar[str] = "algorithm"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            _REGISTRY[cls.name] = cls

    def __init__(self, eta: float, tau: float | None = None):
        self.eta = positive(f"algo={self.name}: eta", eta)
        self.tau = None if tau is None else positive(f"algo={self.name}: tau", tau)
        self.step = 0  # completed iterations
        self.iteration_steps = 1  # set when a fit starts: the policy module's (policy.iteration_steps in sampled play)

    @property
    def regularization(self) -> float | None:
        """τ of the KL-regularized game toward ``ref`` that the algorithm's step and loss are written for;
        None for an unregularized one (SPPO). ``metrics.tau: null`` takes the regularized gap's τ from it.
        Default: ``tau``; Nash-MD with ``mixture_coef`` set and ``tau`` null gives α/η."""
        return self.tau

    # -- the math ------------------------------------------------------------------------------
    def exact_step(self, policy: Any, win_rates: WinRates) -> Tensor:
        """The next iterate's log-probabilities under exact expectations (shape of ``policy.log_probs()``)."""
        raise NotImplementedError

    def rollout(self, rollouts: Rollouts, prompt: Tensor) -> Rollout:
        """Sample what the loss needs for these prompts, label it, and take snapshot log-probs once."""
        raise NotImplementedError

    def loss(self, rollout: Rollout, logp: Tensor) -> Tensor:
        """The practical loss of a rollout, given ``logp`` (N, m): the policy's log-probs of
        ``rollout.responses`` with grad (``rollout.policy_logp`` holds π_t's)."""
        raise NotImplementedError

    def schedule(self, policy: Any) -> None:
        """Snapshot updates due after ``self.step`` completed iterations. Default: none."""

    def prepare(self, policy: Any) -> None:
        """Take the snapshots the algorithm reads before its first step (skipped when resuming)."""

    def steps_per_iteration(self, sampled: bool) -> int:
        """Optimizer steps in one iteration (EGPO and Nash-MP take two calls per iteration in sampled play)."""
        return 1

    def prompt_repeat(self, sampled: bool) -> int:
        """Consecutive optimizer steps that train on one prompt batch (Nash-MP's whole iteration; EGPO's two calls)."""
        return 1

    converges_to: ClassVar[str] = "regularized NE"
    """What the paper's claimed iterate converges to: "NE" (the original game's) or "regularized NE" (π*_τ of
    the reference, whose own duality gap is not 0)."""

    iterate: ClassVar[str] = "last"
    """The iterate whose convergence the paper claims: "last" (the policy itself) or "average" (the uniform mean
    of the iterates so far, ``game/avg_*``; SPPO). Its convergence test checks that one; runs carry it as the
    tag ``iterate``."""

    uses_rounds: ClassVar[bool] = True
    """Whether iterative rounds (``rollout.epochs_per_round`` > 1) reuse one rollout; False for algorithms
    that sample from their own half step every step."""

    # -- driving ---------------------------------------------------------------------------------
    def end_step(self, policy: Any) -> None:
        self.step += 1
        self.schedule(policy)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self.iteration_steps = int(getattr(pl_module, "iteration_steps", 1))
        self.prepare(pl_module.network)
        n = self.steps_per_iteration(pl_module.sampled)
        loop = trainer.fit_loop.epoch_loop
        if n > 1 and loop.max_steps > 0:  # the last iteration completes
            loop.max_steps = math.ceil(loop.max_steps / n) * n

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step % self.steps_per_iteration(pl_module.sampled) == 0:
            self.end_step(pl_module.network)

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

    # -- argument checks, with the algorithm's name in the message ---------------------------------
    def count(self, key: str, value: Any, minimum: int, what: str, maximum: int | None = None) -> int:
        """An integer >= ``minimum``; ``k``, the samples per prompt, is also at most ``MAX_K`` (or ``maximum``),
        so a huge k is refused here, not by the allocator in the first step."""
        value = integer(f"algo={self.name}: {key}", value, minimum, what)
        maximum = MAX_K if maximum is None and key == "k" else maximum
        if maximum is not None and value > maximum:
            raise ValueError(f"algo={self.name}: {key} must be at most {maximum} ({what}; a step samples "
                             f"rollout.prompts_per_step × {key} responses, which must fit in memory), got {value}")
        return value

    def choose(self, key: str, value: Any, choices) -> Any:
        return choice(f"algo={self.name}: {key}", value, choices)

    def period(self, key: str, value: Any) -> int | None:
        return period(f"algo={self.name}: {key}", value)

    def due(self, every: int | None) -> bool:
        """Whether a schedule of period ``every`` fires after the step just completed. A period counts
        iterations of the algorithm's update, so that it means the same in both modes: one exact step in exact
        play, ``iteration_steps`` optimizer steps in sampled play (``policy.iteration_steps``: the steps that move
        the policy as far as one exact step; docs/conventions.md, "Schedules in sampled play")."""
        return is_reset_step(self.step, every * self.iteration_steps if every else every)

    def check_proposal(self, temperature: float, top_k: int) -> None:
        """A proposal's sampling settings: temperature > 0, top_k an integer >= 0 (0 = off)."""
        positive(f"algo={self.name}: proposal_temperature", temperature)
        integer(f"algo={self.name}: proposal_top_k", top_k, 0, "0 = off")
