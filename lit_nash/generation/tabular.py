"""Actions drawn from a tabular policy (``TabularPolicy``): one ``torch.multinomial`` per group."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from lit_nash.generation.base import Samples, SamplingGroup
from lit_nash.guards import check_finite


class TabularSampler:
    def __init__(self, network):
        self.network = network

    @torch.no_grad()
    def generate(self, prompt: Tensor, groups: Sequence[SamplingGroup], return_log_probs: bool = False) -> list[Samples]:
        """Actions (N, k) per group; ``temperature`` divides the logits and ``top_k`` keeps the k most likely
        actions (a proposal distribution, as in EGPO). A seeded group draws from its own generator."""
        out = []
        for group in groups:
            log_probs = self.network.source_log_probs(group.source, group.mixture_coef).detach()
            logits = check_finite(log_probs, f"log-probs of {group.source!r}")[prompt]
            if group.temperature is not None:
                logits = logits / group.temperature
            if group.top_k:
                kth = logits.topk(min(group.top_k, logits.shape[-1]), dim=-1).values[..., -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            generator = None if group.seed is None else torch.Generator(logits.device).manual_seed(int(group.seed))
            actions = torch.multinomial(torch.softmax(logits, -1), group.k, replacement=True, generator=generator)
            lp = log_probs[prompt].gather(-1, actions) if return_log_probs else None
            out.append(Samples(actions, lp))
        return out

    def sync(self) -> None:
        """Samples are drawn from the network's live logits: nothing to sync."""
