"""Lightning's progress bar, with gaps shown in scientific notation (a gap of 3e-9 is not "0.000"), and, on a
run bounded by ``trainer.max_steps`` (every lit_nash run: no epochs), optimizer steps out of max_steps where
Lightning would show "Epoch 0/-2" and the batches of the epoch. One training step is one optimizer step."""

from __future__ import annotations

from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar
from lightning.pytorch.utilities.imports import _RICH_AVAILABLE

from lit_nash.tracking import shown

STEPS = "Steps"  # the bar's description on a max-steps run


def _counts_steps(trainer) -> bool:
    """A run bounded by max_steps alone (Lightning sets max_epochs=-1 when only max_steps is given)."""
    return trainer.max_steps is not None and trainer.max_steps > 0 and trainer.max_epochs in (None, -1)


class _ScientificMetrics:
    def get_metrics(self, trainer, pl_module):
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return {k.split("/")[-1]: f"{shown(k, v):.2e}" if isinstance(v, float) else v for k, v in items.items()}

    @property
    def total_train_batches(self):
        return self.trainer.max_steps if _counts_steps(self.trainer) else super().total_train_batches

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # the bar shows batch_idx + 1: on a max-steps run, the optimizer steps done (a resumed run's too)
        super().on_train_batch_end(trainer, pl_module, outputs, batch,
                                   trainer.global_step - 1 if _counts_steps(trainer) else batch_idx)


class RichGapBar(_ScientificMetrics, RichProgressBar):
    def _get_train_description(self, current_epoch: int) -> str:
        if _counts_steps(self.trainer):
            return STEPS
        return super()._get_train_description(current_epoch)


class TQDMGapBar(_ScientificMetrics, TQDMProgressBar):
    def on_train_epoch_start(self, trainer, *args) -> None:
        super().on_train_epoch_start(trainer, *args)
        if _counts_steps(trainer):
            self.train_progress_bar.set_description(STEPS)


def progress_bar():
    """The bar Lightning would pick (rich when installed), with scientific metrics."""
    return RichGapBar() if _RICH_AVAILABLE else TQDMGapBar()
