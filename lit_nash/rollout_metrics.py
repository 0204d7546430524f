"""What each sampled step trained on, as metrics: the loss and the rollout's statistics.

* ``train/loss``: the step's loss (the engine logs it on logging steps; here also on the first and last step).
* ``train/p_vs_opponent``: the mean P(policy's response ≻ opponent's response) of the step's labeled pairs, where
  the algorithm plays an opponent (MPO, MMD, Nash-MD, Nash-MP, EGPO, online IPO's proposal pair against y''); an
  algorithm that only compares the policy's own samples with each other (SPPO, INPO, COMAL, MNPO, online IPO's
  variant 2) has no opponent, and P = ½ by symmetry: not logged.
* ``train/response_tokens``: the mean length of the policy's responses, in tokens up to and including EOS.
* ``train/truncated``: the share of the policy's responses that hit the token limit (no EOS).

They are logged every ``trainer.log_every_n_steps`` steps, and at a run's first and last step whatever that is
(a 4-step run of a real model logs them too). ``last`` holds the last step's values: the summary line of a text
run, which has no game metrics, prints them.
"""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor

from lit_nash.metrics import is_logging_step
from lit_nash.rollout import Rollout

POLICY_ROLES = ("policy", "proposal")  # what a rollout's ``samples`` call the policy's own samples


def rollout_stats(rollout: Rollout, eos_id: int | None) -> dict[str, float]:
    """The statistics of one step's rollout (see the module docstring); token statistics need the EOS id."""
    stats: dict[str, float] = {}
    samples = getattr(rollout, "samples", None) or {}
    p = getattr(rollout, "p", None)
    if p is not None and "opponent" in samples:
        stats["train/p_vs_opponent"] = float(p.float().mean())
    own = next((samples[r] for r in POLICY_ROLES if r in samples), None)
    if own is None:
        own = rollout.responses
    if eos_id is not None and own.dim() == 3 and own.numel():
        eos = own == eos_id
        ended = eos.any(-1)
        first = eos.float().argmax(-1) + 1  # tokens up to and including the first EOS
        length = torch.where(ended, first, torch.full_like(first, own.shape[-1]))
        stats["train/response_tokens"] = float(length.float().mean())
        stats["train/truncated"] = float((~ended).float().mean())
    return stats


def _loss(outputs) -> float | None:
    loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
    return float(loss) if isinstance(loss, Tensor) else None


class RolloutMetrics(L.Callback):
    """Logs ``rollout_stats`` of the sampled steps (and the loss on the first and last steps)."""

    def __init__(self):
        self.last: dict[str, float] = {}

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        if not isinstance(batch, Rollout):
            return
        first, end = trainer.global_step == 1, trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps
        logging = is_logging_step(trainer)
        if not (first or end or logging):
            return
        stats = rollout_stats(batch, getattr(pl_module.network, "eos_id", None))
        loss = _loss(outputs)
        self.last = ({"train/loss": loss} if loss is not None else {}) | stats
        if logging:  # with the step's other metrics; the engine logs train/loss
            for name, value in stats.items():
                pl_module.log(name, value, prog_bar=name == "train/p_vs_opponent", batch_size=1)
        elif trainer.logger is not None and trainer.is_global_zero:  # Lightning writes no metric on this step
            trainer.logger.log_metrics(self.last, step=trainer.global_step - 1)
