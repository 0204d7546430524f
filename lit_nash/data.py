"""The DataModule the policy trains from.

The stream is prompt indices, forever; the trainer's ``max_steps`` ends the run. Exact play takes all
prompts each step (exact expectations need no samples). Sampled play takes all or ``prompts_per_step``
of them, and the algorithm samples responses on the fly inside the training step (``lit_nash.rollout``):
sampling there, not in a DataLoader worker, keeps it on-policy (a prefetched batch would come from the
previous parameters) and lets EGPO sample from its half-step parameters.
"""

from __future__ import annotations

from typing import Iterator

import lightning as L
import torch
from torch.utils.data import DataLoader, IterableDataset


class _Prompts(IterableDataset):
    """All prompts every step, or ``per_step`` of them drawn without replacement (torch's seeded RNG)."""

    def __init__(self, num_prompts: int, per_step: int | None):
        self.num_prompts, self.per_step = num_prompts, per_step

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        while True:
            if self.per_step is None or self.per_step >= self.num_prompts:
                yield {"prompt": torch.arange(self.num_prompts)}
            else:
                yield {"prompt": torch.randperm(self.num_prompts)[: self.per_step].sort().values}


class GameDataModule(L.LightningDataModule):
    def __init__(self, num_prompts: int, prompts_per_step: int | None = None):
        super().__init__()
        if prompts_per_step is not None and prompts_per_step < 1:
            raise ValueError(f"rollout.prompts_per_step must be >= 1 or null, got {prompts_per_step}")
        self.num_prompts, self.prompts_per_step = num_prompts, prompts_per_step

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_Prompts(self.num_prompts, self.prompts_per_step), batch_size=None)
