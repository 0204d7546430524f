"""RNG states in the checkpoint, so a resumed run draws the same samples as an uninterrupted one.

Sampled play consumes the generators every step (responses, prompt subsets); Lightning checkpoints the
model, optimizer, loops and callbacks, but not the generators. This callback adds them (torch's CPU
generator, every CUDA device's if there are any, Python's ``random`` and NumPy's global generator), as
tensors and plain Python values only, so checkpoints still load with ``torch.load(weights_only=True)``.

With several processes every rank starts from the same seed, so the model is built identically on each;
at the start of a new run each rank then re-seeds from (seed, rank, step), so ranks sample different
responses. The checkpoint holds every rank's generators: each rank gathers them when a checkpoint is
written (the checkpoint is then written by rank 0 for DDP, or into the sharded folder's metadata for FSDP),
under ``ranks`` (one entry per rank, in rank order); the top-level entries are rank 0's, the layout a
single-process checkpoint has. On resume each rank takes its own entry back and does not re-seed, so a
resumed multi-process run draws exactly what the uninterrupted run drew.

A checkpoint without per-rank states for this world size (written by a lit_nash before per-rank states, or
by a run with another number of processes) cannot give each rank its generators: a multi-process run then
re-seeds each rank from (seed, rank, step), deterministic but not the uninterrupted run's draws, and says so.
A single process takes the top-level (rank 0's) states of any checkpoint.
"""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_warn


def _states() -> dict[str, Any]:
    """This process's generator states, as tensors and plain values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    numpy_state = {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                   "has_gauss": int(has_gauss), "gauss": float(gauss)}
    state = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_states(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class RNGCheckpoint(L.Callback):
    def __init__(self, seed: int = 0):
        self.seed = seed
        self._rank, self._world_size = 0, 1
        self._restored = False  # this rank's generators came from a checkpoint: no re-seeding at fit start

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._rank, self._world_size = trainer.global_rank, trainer.world_size  # before a checkpoint is restored

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        restored, self._restored = self._restored, False
        if trainer.world_size > 1 and not restored:
            seed = ((self.seed * 1_000_003 + trainer.global_step) * 1009 + trainer.global_rank) % 2**32
            L.seed_everything(seed, verbose=False)

    def state_dict(self) -> dict[str, Any]:
        # Lightning builds a checkpoint's callback states on every rank (then rank 0 writes it): a collective
        state = _states()
        if self._world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            ranks: list[Any] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(ranks, state)
            state = {**ranks[0], "ranks": ranks}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        ranks = state_dict.get("ranks")
        if self._world_size == 1:
            _set_states(state_dict)
        elif ranks is not None and len(ranks) == self._world_size:
            _set_states(ranks[self._rank])
        else:
            rank_zero_warn(
                f"lit_nash: the checkpoint holds the generator states of {len(ranks) if ranks else 'one'} process(es), "
                f"this run has {self._world_size}: each rank re-seeds from (seed, rank, step), so the resumed run "
                "samples deterministically but not what an uninterrupted run would have sampled")
            return
        self._restored = True
