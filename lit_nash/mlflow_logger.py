"""fit's MLflow logger (``conf/logger/mlflow.yaml``): Lightning's ``MLFlowLogger`` that can leave out the
``epoch`` metric Lightning adds to every step's metrics. A run bounded by ``trainer.max_steps`` has no
epochs (its ``epoch`` is 0 throughout), so fit logs without it; a run by epochs keeps it. ``log_steps``
writes the metrics of many steps in one request (a metric kept for every step, without a request each). With
``leave_open``, the end of ``trainer.fit`` does not mark the run FINISHED or FAILED: ``fit`` does, after it
uploaded the run's files and saw whether the run reached its last step (``lit_nash.run_status``)."""

from __future__ import annotations

from time import time
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

    def log_steps(self, entries: list[tuple[int, dict[str, float]]]) -> None:
        """(step, metrics) of many steps in as few requests as MLflow allows (1000 metrics each)."""
        from mlflow.entities import Metric

        timestamp = int(time() * 1000)
        metrics = [Metric(key=k, value=float(v), timestamp=timestamp, step=step) for step, m in entries for k, v in m.items()]
        for i in range(0, len(metrics), 1000):
            self.experiment.log_batch(run_id=self.run_id, metrics=metrics[i : i + 1000], **self._log_batch_kwargs)
