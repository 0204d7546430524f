"""The DataModule the policy trains from.

The stream is prompt indices, forever; the trainer's ``max_steps`` ends the run. Exact play takes all
prompts each step (exact expectations need no samples). Sampled play takes all or ``prompts_per_step``
of them, and the algorithm samples responses on the fly inside the training step (``lit_nash.rollout``).
Iterative mode (``epochs_per_round`` > 1, SPPO/INPO/COMAL-style rounds) keeps the prompts of a round for
that many steps; the algorithm samples once per round with the frozen policy and trains on it each step:
sampling there, not in a DataLoader worker, keeps it on-policy (a prefetched batch would come from the
previous parameters) and lets EGPO sample from its half-step parameters.
"""

from __future__ import annotations

from typing import Iterator

import lightning as L
import torch
from torch.utils.data import DataLoader, IterableDataset


class _Prompts(IterableDataset):
    """All prompts every step, or ``per_step`` of them drawn without replacement; in iterative mode the
    same prompts for ``epochs_per_round`` steps, the first of which is flagged ``new_round``.

    Round r draws from its own generator seeded with (seed, r), not from torch's global RNG: Lightning
    fetches a batch ahead, so global draws here would interleave with the step's sampling differently
    after a resume. Keyed by r, a resumed stream (``start`` = batches already trained) is the same stream.
    """

    def __init__(self, num_prompts: int, per_step: int | None, epochs_per_round: int, seed: int, start: int):
        self.num_prompts, self.per_step, self.epochs = num_prompts, per_step, epochs_per_round
        self.seed, self.start = seed, start

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        i = self.start
        while True:
            r = i // self.epochs
            if self.per_step is None or self.per_step >= self.num_prompts:
                prompt = torch.arange(self.num_prompts)
            else:
                g = torch.Generator().manual_seed(self.seed * 1_000_003 + r)
                prompt = torch.randperm(self.num_prompts, generator=g)[: self.per_step].sort().values
            yield {"prompt": prompt, "new_round": torch.tensor(i % self.epochs == 0)}
            i += 1


class GameDataModule(L.LightningDataModule):
    def __init__(self, num_prompts: int, prompts_per_step: int | None = None, epochs_per_round: int = 1, seed: int = 0):
        super().__init__()
        if prompts_per_step is not None and prompts_per_step < 1:
            raise ValueError(f"rollout.prompts_per_step must be >= 1 or null, got {prompts_per_step}")
        if int(epochs_per_round) != epochs_per_round or epochs_per_round < 1:
            raise ValueError(f"rollout.epochs_per_round must be an integer >= 1, got {epochs_per_round}")
        self.num_prompts, self.prompts_per_step, self.seed = num_prompts, prompts_per_step, seed
        self.epochs_per_round = int(epochs_per_round)

    def train_dataloader(self) -> DataLoader:
        done = self.trainer.fit_loop.epoch_loop.batch_progress.total.completed if self.trainer else 0
        # its own generator: a DataLoader iterator otherwise draws its base seed from torch's global RNG,
        # and a resumed run creates one more iterator than an uninterrupted one
        prompts = _Prompts(self.num_prompts, self.prompts_per_step, self.epochs_per_round, self.seed, done)
        return DataLoader(prompts, batch_size=None,
                          generator=torch.Generator().manual_seed(self.seed))
