"""Lightning's progress bar, with gaps shown in scientific notation (a gap of 3e-9 is not "0.000")."""

from __future__ import annotations

from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar
from lightning.pytorch.utilities.imports import _RICH_AVAILABLE


class _ScientificMetrics:
    def get_metrics(self, trainer, pl_module):
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return {k.split("/")[-1]: f"{v:.2e}" if isinstance(v, float) else v for k, v in items.items()}


class RichGapBar(_ScientificMetrics, RichProgressBar):
    pass


class TQDMGapBar(_ScientificMetrics, TQDMProgressBar):
    pass


def progress_bar():
    """The bar Lightning would pick (rich when installed), with scientific metrics."""
    return RichGapBar() if _RICH_AVAILABLE else TQDMGapBar()
