"""A callback for multi-process tests: every rank writes its full parameters after training."""

from pathlib import Path

import lightning as L
import torch

from lit_nash.policy.causal_lm import parameters_at_rest


class SaveParams(L.Callback):
    def __init__(self, path: str):
        self.path = Path(path)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        state = {}
        for name, p in parameters_at_rest(pl_module).items():
            full = p.full_tensor() if hasattr(p, "full_tensor") else p  # a DTensor shard → the whole tensor
            state[name] = full.detach().cpu().clone()
        self.path.mkdir(parents=True, exist_ok=True)
        torch.save(state, self.path / f"rank{trainer.global_rank}.pt")
