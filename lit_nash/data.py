"""The DataModule the policy trains from.

For exact play on a matrix game every step sees all prompts (exact expectations need no samples), so
the stream is the prompt index tensor, forever; the trainer's ``max_steps`` ends the run. Later issues
add on-the-fly rollouts (sampled responses, labeled by the preference model) behind the same module.
"""

from __future__ import annotations

from typing import Iterator

import lightning as L
import torch
from torch.utils.data import DataLoader, IterableDataset


class _AllPrompts(IterableDataset):
    def __init__(self, num_prompts: int):
        self.num_prompts = num_prompts

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        prompts = torch.arange(self.num_prompts)
        while True:
            yield {"prompt": prompts}


class GameDataModule(L.LightningDataModule):
    def __init__(self, num_prompts: int):
        super().__init__()
        self.num_prompts = num_prompts

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_AllPrompts(self.num_prompts), batch_size=None)
