"""The trained policy as a LightningModule.

``TabularPolicy`` holds one softmax per prompt (a matrix game is one prompt; a batch of games is many):
logits of shape (prompts × K). The algorithm object computes each step's target and the module applies
it through Lightning's optimizer loop, so steps, logging and checkpoints are Lightning's own.

Two modes (``rollout.mode``):

* exact: the algorithm's closed-form iterate θ* is applied as one SGD step of learning rate 1 on
  ½‖θ − θ*‖², which lands exactly on θ*;
* sampled: responses are drawn from the policy (or a snapshot, or a geometric mixture), labeled by the
  preference oracle, and the algorithm's practical loss is minimized by the configured optimizer, exactly
  as for a causal LM (``lit_nash.policy.causal_lm``), so the losses are checked on ground truth.
"""

from __future__ import annotations

from typing import Any, Callable

import lightning as L
import torch
from torch import Tensor, nn

from lit_nash.games import dynamics as D
from lit_nash.guards import check_finite, check_gradients, in_step
from lit_nash.metrics import is_logging_step
from lit_nash.snapshots import PREFIX, Snapshots

REFERENCES = ("uniform", "gaussian")
MODES = ("exact", "sampled")
OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
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
        num_prompts: int | None = None,
        num_actions: int | None = None,
        reference: str = "uniform",
        reference_seed: int = 0,
        init: str = "reference",
        dtype: str = "float64",
        mode: str = "exact",
        optimizer: str = "sgd",
        lr: float = 0.1,
        algorithm: Any = None,
        preference: Any = None,
        game: Any = None,
    ):
        """Sizes come from ``game`` (prompts × actions) or from ``num_prompts`` and ``num_actions``."""
        super().__init__()
        if game is not None:
            num_prompts, num_actions = game.num_prompts, game.num_actions
        if num_prompts is None or num_actions is None:
            raise ValueError("TabularPolicy needs a game or num_prompts and num_actions")
        if init not in ("reference", "uniform"):
            raise ValueError(f"policy.init must be 'reference' or 'uniform', got {init!r}")
        if mode not in MODES:
            raise ValueError(f"rollout.mode must be one of {list(MODES)}, got {mode!r}")
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"policy.optimizer must be one of {sorted(OPTIMIZERS)}, got {optimizer!r}")
        if not lr > 0:
            raise ValueError(f"policy.lr must be > 0, got {lr}")
        if dtype not in DTYPES:
            raise ValueError(f"policy.dtype must be one of {list(DTYPES)}, got {dtype!r}")
        self.save_hyperparameters(ignore=["algorithm", "preference", "game"], logger=False)  # the run logs the whole config
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

    # -- sampled play: the interface the causal-LM policy shares ------------------------------------
    def source_log_probs(self, source: str = "policy", mixture_coef: float = 0.0) -> Tensor:
        """Log-probs (prompts × K) of a source: "policy" (with grad), a snapshot, "history/j" (the j-th
        newest entry of a history), or "mixture" (geometric mixture of the policy and the reference)."""
        if source == "policy":
            return D.normalize(self.logits)
        if source == "mixture":
            return D.geometric_mixture(self.log_probs(), self.snapshot("ref"), mixture_coef)
        name, _, index = source.partition("/")
        return self.snapshot(name)[int(index)] if index else self.snapshot(name)

    @torch.no_grad()
    def sample(self, prompt: Tensor, k: int, source: str = "policy", temperature: float | None = None,
               top_k: int | None = None, top_p: float | None = None, mixture_coef: float = 0.0) -> Tensor:
        """k responses (action indices) per prompt, shape (N, k); ``temperature`` divides the logits and
        ``top_k`` keeps the k most likely actions (a proposal distribution, as in EGPO)."""
        logits = check_finite(self.source_log_probs(source, mixture_coef).detach()[prompt], f"log-probs of {source!r}")
        if temperature is not None:
            logits = logits / temperature
        if top_k:
            kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        return torch.multinomial(torch.softmax(logits, -1), k, replacement=True)

    def sample_groups(self, prompt: Tensor, groups: list[dict]) -> list[Tensor]:
        """``sample(prompt, **group)`` for each group, in order (one draw each: nothing to fuse here)."""
        return [self.sample(prompt, **group) for group in groups]

    def response_log_probs(self, prompt: Tensor, responses: Tensor, source: str = "policy", reduction: str = "sum") -> Tensor:
        """log π(y | prompt) of responses (N, k); with grad for "policy" only. A response is one action,
        so ``reduction`` (sum or per-token mean for LMs) changes nothing here."""
        log_probs = check_finite(self.source_log_probs(source), f"log-probs of {source!r}")
        if source != "policy":
            log_probs = log_probs.detach()
        return log_probs[prompt.unsqueeze(-1), responses]

    def optimize(self, loss_of: Callable[[dict], Tensor], batch: dict[str, Tensor]) -> Tensor:
        """One optimizer step on the loss of a rollout batch; returns the loss."""
        return self._step(loss_of(batch))

    def _step(self, loss: Tensor) -> Tensor:
        opt = self.optimizers()
        opt.zero_grad()
        self.manual_backward(check_finite(loss, "loss"))
        check_gradients([self.logits])
        opt.step()
        return loss.detach()

    def set_logits(self, value: Tensor) -> None:
        with torch.no_grad():
            self.logits.copy_(value)

    # -- Lightning -----------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        with in_step(self):
            if self.hparams.mode == "sampled":
                loss = self.algorithm.sampled_step(self, batch["prompt"], bool(batch.get("new_round", True)))
            else:
                target = check_finite(self.algorithm.exact_step(self, self.preference.win_rates), "policy update")
                loss = 0.5 * (self.logits - target).pow(2).sum()
                self._step(loss)
        if is_logging_step(self.trainer):
            self.log("train/loss", loss.detach())
        return loss.detach()

    def configure_optimizers(self):
        if self.hparams.mode == "exact":
            return torch.optim.SGD([self.logits], lr=1.0)  # lands exactly on the closed-form iterate
        return OPTIMIZERS[self.hparams.optimizer]([self.logits], lr=self.hparams.lr)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.snapshots.register_from_state_dict(checkpoint["state_dict"], PREFIX)
