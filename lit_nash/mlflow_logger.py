"""fit's MLflow logger (``conf/logger/mlflow.yaml``): Lightning's ``MLFlowLogger`` that can leave out the
``epoch`` metric Lightning adds to every step's metrics. A run bounded by ``trainer.max_steps`` has no
epochs (its ``epoch`` is 0 throughout), so fit logs without it; a run by epochs keeps it. With
``leave_open``, the end of ``trainer.fit`` does not mark the run FINISHED or FAILED: ``fit`` does, after it
uploaded the run's files and saw whether the run reached its last step (``lit_nash.run_status``)."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.loggers import MLFlowLogger as _LightningMLFlowLogger
from lightning.pytorch.utilities import rank_zero_only


class MLFlowLogger(_LightningMLFlowLogger):
    def __init__(self, *args: Any, log_epoch: bool = True, leave_open: bool = False, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.log_epoch = log_epoch
        self.leave_open = leave_open

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if not self.log_epoch:
            metrics = {k: v for k, v in metrics.items() if k != "epoch"}
        if metrics:
            super().log_metrics(metrics, step)

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        if not self.leave_open:
            super().finalize(status)
