"""The generator interface: given prompts and sampling groups, return the sampled responses.

A *sampling group* is k responses per prompt from one source (the policy, a snapshot, or the geometric
mixture of policy and reference) under one set of sampling settings. An online step asks for several
groups at once (online IPO: a proposal pair at temperature 2 and y'' at temperature 1), so a generator
can fuse them (one decoding loop, one forward per model per token) while each group keeps its own
random stream: a group's samples never depend on the groups it was fused with.

What a generator that runs its own engine (vLLM) needs is part of the interface: ``sync`` is called
by the rollout before it samples after the policy's weights changed (the trainer's optimizer step; a
snapshot refresh), and a group's ``seed`` maps to a per-request seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence, runtime_checkable

from torch import Tensor


@dataclass(frozen=True)
class SamplingGroup:
    """k responses per prompt from ``source``; ``None`` settings fall back to the policy's own."""

    k: int
    source: str = "policy"           # "policy", a snapshot name ("ref", "half_step", "history/0", ...) or "mixture"
    mixture_coef: float = 0.0        # α of the mixture π^(1−α)·ref^α (source="mixture" only)
    temperature: float | None = None
    top_k: int | None = None         # 0 = off
    top_p: float | None = None       # 1.0 = off
    max_new_tokens: int | None = None
    seed: int | None = None          # the group's generator seed; None: drawn from torch's global stream

    def settings(self, network) -> tuple[float, int, float, int]:
        """(temperature, top_k, top_p, max_new_tokens): the group's own, or the LM policy's where it sets none."""
        pick = lambda own, default: default if own is None else own  # noqa: E731
        return (float(pick(self.temperature, network.temperature)), int(pick(self.top_k, network.top_k)),
                float(pick(self.top_p, network.top_p)), int(pick(self.max_new_tokens, network.max_new_tokens)))


@dataclass
class Samples:
    """One group's responses: (N, k, T) token ids ending with EOS then pad (LM) or (N, k) actions (tabular),
    and, when asked for, their log-probs (N, k) under the source's untempered, unfiltered distribution."""

    responses: Tensor
    log_probs: Tensor | None = None


@runtime_checkable
class Generator(Protocol):
    def generate(self, prompt: Tensor, groups: Sequence[SamplingGroup], return_log_probs: bool = False) -> list[Samples]:
        """One ``Samples`` per group, in order, for the prompt indices ``prompt`` (N,)."""

    def sync(self) -> None:
        """The policy's weights changed: make the next ``generate`` sample from the new ones."""
