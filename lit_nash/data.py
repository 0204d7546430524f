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
    """All prompts every step, or ``per_step`` of them drawn without replacement.

    Batch i draws from its own generator seeded with (seed, i), not from torch's global RNG: Lightning
    fetches a batch ahead, so global draws here would interleave with the step's sampling differently
    after a resume. Keyed by i, a resumed stream (``start`` = batches already trained) is the same stream.
    """

    def __init__(self, num_prompts: int, per_step: int | None, seed: int, start: int):
        self.num_prompts, self.per_step, self.seed, self.start = num_prompts, per_step, seed, start

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        i = self.start
        while True:
            if self.per_step is None or self.per_step >= self.num_prompts:
                yield {"prompt": torch.arange(self.num_prompts)}
            else:
                g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
                yield {"prompt": torch.randperm(self.num_prompts, generator=g)[: self.per_step].sort().values}
            i += 1


class GameDataModule(L.LightningDataModule):
    def __init__(self, num_prompts: int, prompts_per_step: int | None = None, seed: int = 0):
        super().__init__()
        if prompts_per_step is not None and prompts_per_step < 1:
            raise ValueError(f"rollout.prompts_per_step must be >= 1 or null, got {prompts_per_step}")
        self.num_prompts, self.prompts_per_step, self.seed = num_prompts, prompts_per_step, seed

    def train_dataloader(self) -> DataLoader:
        done = self.trainer.fit_loop.epoch_loop.batch_progress.total.completed if self.trainer else 0
        # its own generator: a DataLoader iterator otherwise draws its base seed from torch's global RNG,
        # and a resumed run creates one more iterator than an uninterrupted one
        return DataLoader(_Prompts(self.num_prompts, self.prompts_per_step, self.seed, done), batch_size=None,
                          generator=torch.Generator().manual_seed(self.seed))
