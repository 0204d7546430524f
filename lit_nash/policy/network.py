"""The interface a policy network offers the engine, the rollout and the algorithms.

Two networks implement it: ``TabularPolicy`` (one softmax per prompt) and ``CausalLMPolicy`` (a
``transformers`` causal LM, optionally with LoRA). The engine's ``PolicyModule`` holds one and trains it;
generators (``lit_nash.generation``) sample from it; algorithms read its exact distribution in exact play
and ask its snapshot store for the frozen copies they anchor on.

Shapes: N prompts (indices into the run's prompt list), m responses per prompt, T tokens per response,
A actions of an enumerable game. A response is an action index (tabular: ``responses`` is (N, m)) or a
sequence of token ids ending with EOS then pad (LM: (N, m, T)).

A *source* names whose distribution is meant: ``"policy"`` (the trained weights, with grad), a snapshot
(``"ref"``, ``"magnet"``, ``"history/0"`` …), or ``"mixture"`` (the geometric mixture
π^(1−α)·ref^α, token by token for an LM; α = ``mixture_coef``).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from lit_nash.policy.snapshots import Snapshots


@runtime_checkable
class PolicyNetwork(Protocol):
    snapshots: Snapshots

    def response_log_probs(self, prompt: Tensor, responses: Tensor, source: str = "policy",
                           reduction: str = "sum", mixture_coef: float = 0.0) -> Tensor:
        """log π_source(y | x) (N, m) of ``responses`` to ``prompt`` (N,); with grad for "policy" only.
        ``reduction``: "sum" over tokens, or "mean" per token (LMs; a tabular response is one action)."""

    def scoring_bytes(self, prompt: Tensor, responses: Tensor) -> Tensor:
        """(N,) estimated memory of ``response_log_probs`` with grad, forward and backward, per prompt row (what
        ``policy.micro_batches=auto`` packs into its budget)."""

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What the optimizer steps."""

    def trainable_state(self) -> dict[str, Tensor]:
        """The tensors a snapshot copies (by name)."""

    def load_trainable_state(self, tensors: dict[str, Tensor]) -> None:
        """Put copied tensors back in place (no grad), so the optimizer keeps its parameter objects."""

    # exact distribution, on enumerable games (tabular policies, LMs on token games)
    def log_probs(self, source: str = "policy") -> Tensor:
        """Exact log-distribution (prompts, A) over the game's actions, no grad."""

    def snapshot(self, name: str) -> Tensor:
        """A snapshot's exact log-distribution (prompts, A); a history ring stacked (n, prompts, A), newest first."""


class SnapshotMixin:
    """The snapshot operations every network shares, on top of ``trainable_state`` and ``snapshots``."""

    snapshots: Snapshots

    def has_snapshot(self, name: str) -> bool:
        return name in self.snapshots or self.snapshots.ring(name) > 0

    def snapshot_names(self) -> list[str]:
        return self.snapshots.names()

    def refresh_snapshot(self, name: str) -> None:
        """Snapshot ``name`` ← the current policy."""
        self.snapshots.take(name, self.trainable_state())
        self.snapshot_changed(name)

    def push_snapshot(self, name: str, maxlen: int) -> None:
        """Prepend the current policy to history ring ``name`` (``name/0`` newest), keeping ``maxlen``."""
        self.snapshots.push(name, self.trainable_state(), maxlen)
        self.snapshot_changed(name)

    @torch.no_grad()
    def blend_snapshot(self, name: str, rate: float) -> None:
        """Snapshot ``name`` ← (1 − rate)·snapshot + rate·current, in parameter space: an exponential moving
        average of the iterates (Nash-MP's moving prox center); ``rate`` 1 is ``refresh_snapshot``."""
        old = self.snapshots[name]
        self.snapshots.take(name, {k: torch.lerp(old[k], v.to(old[k].dtype), rate)
                                   for k, v in self.trainable_state().items()})
        self.snapshot_changed(name)

    def restore_snapshot(self, name: str) -> None:
        """The current policy ← snapshot ``name``, in place."""
        self.load_trainable_state(self.snapshots[name])

    def snapshot_changed(self, name: str) -> None:
        """Hook for cached views of a snapshot (the LM caches its exact reference distribution)."""
