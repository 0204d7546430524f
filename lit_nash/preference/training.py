"""The LightningModules that train a text preference model's own model (``python -m lit_nash train_preference``):
a ``PairwiseClassifier`` (``PairwiseTraining``), a ``BradleyTerryReward`` (``BradleyTerryTraining``) or a
``GeneralPreferenceModel`` (``GPMTraining``).

The model is built frozen, as the judge ``fit`` uses; here it learns. Training reads pairs through the judge's
own template, tokenizer and ``encode``, and evaluation calls its ``prob_text``, so what is measured is what
``fit`` will read. Each module differs only in the logit of P(a ≻ b) it trains.
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics.classification import BinaryAccuracy, BinaryCalibrationError


class PreferenceTraining(L.LightningModule):
    """Binary cross-entropy of ``logit(prompts, a, b)`` against the (soft) label; subclasses define the logit."""

    antisymmetric = False  # logit(b, a) = −logit(a, b) by construction: a swapped copy adds nothing

    def __init__(self, judge, lr: float, weight_decay: float = 0.0, swap_augment: bool = True):
        super().__init__()
        self.judge = judge
        judge.model.requires_grad_(True).train()  # the judge is frozen for fit; here it learns
        self.lr, self.weight_decay = float(lr), float(weight_decay)
        self.swap_augment = bool(swap_augment) and not self.antisymmetric
        self.accuracy = BinaryAccuracy()
        self.calibration = BinaryCalibrationError(n_bins=15, norm="l1")
        self.evaluated_at = -1  # the global step of the last evaluation

    def logit(self, prompts, a, b):  # pragma: no cover - abstract
        raise NotImplementedError

    def training_step(self, batch, batch_idx):
        prompts, a, b, y = batch["prompt"], batch["a"], batch["b"], batch["label"].float()
        if self.swap_augment:
            prompts, a, b, y = prompts + prompts, a + b, b + a, torch.cat([y, 1.0 - y])
        loss = F.binary_cross_entropy_with_logits(self.logit(list(prompts), list(a), list(b)).float(), y)
        self.log("train/loss", loss, batch_size=len(y), prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        y = batch["label"].float()
        p = self.judge.prob_text(batch["prompt"], batch["a"], batch["b"]).to(y.device)  # what fit will read
        loss = F.binary_cross_entropy(p.double().clamp(1e-7, 1 - 1e-7), y.double())
        self.log("eval/loss", loss, batch_size=len(y), prog_bar=True)
        decided = y != 0.5  # a tie has no winner: it counts in eval/loss only
        if decided.any():
            self.accuracy.update(p[decided], y[decided] > 0.5)
            self.calibration.update(p[decided], y[decided] > 0.5)
        self.log("eval/accuracy", self.accuracy, batch_size=len(y), prog_bar=True)
        self.log("eval/calibration_error", self.calibration, batch_size=len(y))

    def on_validation_epoch_end(self):
        self.evaluated_at = self.global_step

    def configure_optimizers(self):
        params = [p for p in self.judge.model.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)


class PairwiseTraining(PreferenceTraining):
    def logit(self, prompts, a, b):
        """log P(first wins) − log P(not first wins): its sigmoid is ``text.first_wins`` of the logits."""
        texts = [self.judge.render(x, a=y, b=z) for x, y, z in zip(prompts, a, b)]
        logits = self.judge.model(**self.judge.encode(texts)).logits.float()
        if logits.shape[-1] == 1:
            return logits[:, 0]
        k = self.judge.first_label
        return logits[:, k] - torch.cat([logits[:, :k], logits[:, k + 1 :]], dim=-1).logsumexp(-1)


class BradleyTerryTraining(PreferenceTraining):
    antisymmetric = True

    def logit(self, prompts, a, b):
        """r(x, a) − r(x, b), each distinct (prompt, response) scored once."""
        r = self.judge.rewards(prompts + prompts, a + b)
        return r[: len(prompts)] - r[len(prompts) :]


class GPMTraining(PreferenceTraining):
    antisymmetric = True

    def logit(self, prompts, a, b):
        """⟨R(x)·v_a, v_b⟩ / τ, each distinct response and prompt encoded once."""
        return self.judge.logits(prompts, a, b)
