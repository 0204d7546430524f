"""The trained policy as a LightningModule.

``TabularPolicy`` holds one softmax per prompt (a matrix game is one prompt; a batch of games is many):
logits of shape (prompts × K). The algorithm object computes each step's target and the module applies
it through Lightning's optimizer loop, so steps, logging and checkpoints are Lightning's own.

Exact mode (this file): the target is the algorithm's closed-form iterate θ*, applied as one SGD step
of learning rate 1 on ½‖θ − θ*‖², which lands exactly on θ*.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from lit_nash.games import dynamics as D
from lit_nash.metrics import is_logging_step
from lit_nash.snapshots import PREFIX, Snapshots

REFERENCES = ("uniform", "gaussian")
DTYPES = {"float64": torch.float64, "float32": torch.float32}


def reference_logits(kind: str, num_prompts: int, num_actions: int, seed: int = 0) -> Tensor:
    """Reference logits: uniform, or N(0, 1) per prompt as in EGPO's simulations."""
    if kind == "uniform":
        return torch.zeros(num_prompts, num_actions, dtype=torch.float64)
    if kind == "gaussian":
        g = torch.Generator().manual_seed(seed)
        return torch.randn(num_prompts, num_actions, generator=g, dtype=torch.float64)
    raise ValueError(f"policy.reference must be one of {list(REFERENCES)}, got {kind!r}")


class TabularPolicy(L.LightningModule):
    def __init__(
        self,
        num_prompts: int,
        num_actions: int,
        reference: str = "uniform",
        reference_seed: int = 0,
        init: str = "reference",
        dtype: str = "float64",
        algorithm: Any = None,
        preference: Any = None,
    ):
        super().__init__()
        if init not in ("reference", "uniform"):
            raise ValueError(f"policy.init must be 'reference' or 'uniform', got {init!r}")
        if dtype not in DTYPES:
            raise ValueError(f"policy.dtype must be one of {list(DTYPES)}, got {dtype!r}")
        self.save_hyperparameters(ignore=["algorithm", "preference"], logger=False)  # the run logs the whole config
        ref = reference_logits(reference, num_prompts, num_actions, reference_seed).to(DTYPES[dtype])
        start = ref if init == "reference" else torch.zeros_like(ref)
        self.logits = nn.Parameter(D.normalize(start))
        self.snapshots = Snapshots()
        self.snapshots.set("ref", D.normalize(ref))
        self.algorithm = algorithm
        self.preference = preference
        self.automatic_optimization = False

    # -- the policy interface algorithms use --------------------------------------------------------
    def log_probs(self) -> Tensor:
        return D.normalize(self.logits.detach())

    def snapshot(self, name: str) -> Tensor:
        return self.snapshots[name]

    def has_snapshot(self, name: str) -> bool:
        return name in self.snapshots

    def refresh_snapshot(self, name: str) -> None:
        self.snapshots.set(name, self.log_probs())

    def push_snapshot(self, name: str, maxlen: int) -> None:
        self.snapshots.push(name, self.log_probs(), maxlen)

    def set_logits(self, value: Tensor) -> None:
        with torch.no_grad():
            self.logits.copy_(value)

    # -- Lightning -----------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        target = self.algorithm.exact_step(self, self.preference.win_rates)
        if not torch.isfinite(target).all():
            raise FloatingPointError(
                f"algo={self.algorithm.name}: non-finite policy update at step {self.algorithm.step + 1}"
            )
        loss = 0.5 * (self.logits - target).pow(2).sum()
        opt = self.optimizers()
        opt.zero_grad()
        self.manual_backward(loss)
        opt.step()
        if is_logging_step(self.trainer):
            self.log("train/loss", loss.detach())
        return loss.detach()

    def configure_optimizers(self):
        return torch.optim.SGD([self.logits], lr=1.0)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.snapshots.register_from_state_dict(checkpoint["state_dict"], PREFIX)
