"""RNG states in the checkpoint, so a resumed run draws the same samples as an uninterrupted one.

Sampled play consumes torch's RNG every step (responses, prompt subsets); Lightning checkpoints the
model, optimizer, loops and callbacks, but not the generators. This callback adds them, as tensors and
plain Python values only, so checkpoints still load with ``torch.load(weights_only=True)``.

With several processes every rank starts from the same seed, so the model is built identically on each;
at fit start each rank then re-seeds from (seed, rank, step), so ranks sample different responses and a
resumed multi-process run draws deterministically (the checkpoint holds rank 0's generators only).
"""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch


class RNGCheckpoint(L.Callback):
    def __init__(self, seed: int = 0):
        self.seed = seed

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.world_size > 1:
            seed = ((self.seed * 1_000_003 + trainer.global_step) * 1009 + trainer.global_rank) % 2**32
            L.seed_everything(seed, verbose=False)

    def state_dict(self) -> dict[str, Any]:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        numpy_state = {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)}
        state = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["torch"])
        n = state_dict["numpy"]
        np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
        random.setstate(state_dict["python"])
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])
