"""The DataModules the policy trains from: a game's prompts, or a prompt dataset loaded with ``datasets``.

The stream is prompt indices, forever; the trainer's ``max_steps`` ends the run. Exact play takes all
prompts each step (exact expectations need no samples). Sampled play takes all or ``prompts_per_step``
of them, and the algorithm samples responses on the fly inside the training step (``lit_nash.rollout``).
Iterative mode (``epochs_per_round`` > 1, SPPO/INPO/COMAL-style rounds) keeps the prompts of a round for
that many steps; the algorithm samples once per round with the frozen policy and trains on it each step:
sampling there, not in a DataLoader worker, keeps it on-policy (a prefetched batch would come from the
previous parameters) and lets EGPO sample from its half-step parameters.

With several processes (DDP, FSDP) each rank takes its own prompts: ``prompts_per_step`` is per rank, and
rank r takes the r-th slice of the step's shared permutation (or every world-th prompt when all are used;
a game with fewer prompts than processes is played whole on every rank).
"""

from __future__ import annotations

from typing import Any, Iterator

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

    def __init__(self, num_prompts: int, per_step: int | None, epochs_per_round: int, seed: int, start: int,
                 rank: int = 0, world_size: int = 1):
        self.num_prompts, self.per_step, self.epochs = num_prompts, per_step, epochs_per_round
        self.seed, self.start, self.rank, self.world = seed, start, rank, world_size
        if per_step is not None and per_step < num_prompts and per_step * world_size > num_prompts:
            raise ValueError(
                f"rollout.prompts_per_step={per_step} per process × {world_size} processes exceeds the "
                f"{num_prompts} prompts; lower prompts_per_step"
            )

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        i = self.start
        while True:
            r = i // self.epochs
            if self.per_step is None or self.per_step >= self.num_prompts:
                prompt = torch.arange(self.num_prompts)
                if self.num_prompts >= self.world:  # else (a one-prompt matrix game) every rank plays them all
                    prompt = prompt[self.rank :: self.world]
            else:
                g = torch.Generator().manual_seed(self.seed * 1_000_003 + r)
                share = torch.randperm(self.num_prompts, generator=g)[self.rank * self.per_step :]
                prompt = share[: self.per_step].sort().values
            yield {"prompt": prompt, "new_round": torch.tensor(i % self.epochs == 0)}
            i += 1


class GameDataModule(L.LightningDataModule):
    def __init__(self, num_prompts: int, prompts_per_step: int | None = None, epochs_per_round: int = 1, seed: int = 0):
        super().__init__()
        if prompts_per_step is not None and (not _is_int(prompts_per_step) or prompts_per_step < 1):
            raise ValueError(f"rollout.prompts_per_step must be an integer >= 1 or null (all prompts), got {prompts_per_step}")
        if not _is_int(epochs_per_round) or epochs_per_round < 1:
            raise ValueError(f"rollout.epochs_per_round must be an integer >= 1, got {epochs_per_round}")
        self.num_prompts, self.seed = num_prompts, seed
        self.prompts_per_step = None if prompts_per_step is None else int(prompts_per_step)
        self.epochs_per_round = int(epochs_per_round)

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        # batches already trained: `processed` counts a batch once its training step ran, so it is exact both for
        # a checkpoint written at the end of fit and for one written in on_train_batch_end (before `completed` moves)
        done = trainer.fit_loop.epoch_loop.batch_progress.total.processed if trainer else 0
        rank, world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        # its own generator: a DataLoader iterator otherwise draws its base seed from torch's global RNG,
        # and a resumed run creates one more iterator than an uninterrupted one
        prompts = _Prompts(self.num_prompts, self.prompts_per_step, self.epochs_per_round, self.seed, done, rank, world)
        return DataLoader(prompts, batch_size=None,
                          generator=torch.Generator().manual_seed(self.seed))


class PromptDataModule(GameDataModule):
    """Prompts from a dataset (``load_prompts``); the policy reads them from ``.prompts``, batches are indices."""

    def __init__(self, path: str, column: str = "prompt", split: str = "train", subset: str | None = None,
                 max_prompts: int | None = None, prompts_per_step: int | None = 8, epochs_per_round: int = 1,
                 seed: int = 0):
        self.prompts = load_prompts(path, column=column, split=split, subset=subset, max_prompts=max_prompts)
        super().__init__(len(self.prompts), prompts_per_step, epochs_per_round, seed)


Prompt = str | list[dict[str, str]]


def load_prompts(path: str, column: str = "prompt", split: str = "train", subset: str | None = None,
                 max_prompts: int | None = None) -> list[Prompt]:
    """Prompts from a local JSONL / JSON / Parquet / CSV file, a saved dataset directory, or a hub dataset.

    A prompt is a string, or a conversation: a list of ``{"role", "content"}`` messages (the policy applies
    its chat template). Trailing assistant turns are dropped: in preference datasets they are a reference
    answer, not part of the prompt. The first ``max_prompts`` rows are kept.
    """
    from lit_nash.tables import load_table

    if max_prompts is not None and (not _is_int(max_prompts) or max_prompts < 1):
        raise ValueError(f"data.max_prompts must be >= 1 (an integer) or null (all rows), got {max_prompts}")
    if not isinstance(column, str) or not column:
        raise ValueError(f"data.column must be a column name, got {column!r}")
    max_prompts = None if max_prompts is None else int(max_prompts)
    table, where = load_table(path, split=split, subset=subset), f"data.path={path!r}"
    if column not in table.column_names:
        raise ValueError(f"{where}: no column {column!r}; columns are {table.column_names} (set data.column)")
    rows = table[column] if max_prompts is None else table.select(range(min(max_prompts, len(table))))[column]
    return [_prompt(row, i, where, column) for i, row in enumerate(rows)]


def _is_int(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and int(value) == value


def _prompt(row: Any, i: int, where: str, column: str) -> Prompt:
    if row is None:
        raise ValueError(f"{where}: row {i} has no {column!r} field; give every row a prompt (or set data.column "
                         "to the column that holds them)")
    if isinstance(row, str):
        if not row.strip():
            raise ValueError(f"{where}: row {i} of column {column!r} is an empty prompt")
        return row
    if isinstance(row, list) and row and all(isinstance(m, dict) and {"role", "content"} <= set(m) for m in row):
        messages = [{"role": str(m["role"]), "content": str(m["content"])} for m in row]
        while messages and messages[-1]["role"] == "assistant":
            messages.pop()
        if messages:
            return messages
    raise ValueError(
        f"{where}: row {i} of column {column!r} is neither a prompt string nor a conversation "
        f"(a list of {{'role', 'content'}} messages with a non-assistant turn): {str(row)[:200]!r}"
    )
