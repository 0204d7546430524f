"""fit's MLflow logger (``conf/logger/mlflow.yaml``): Lightning's ``MLFlowLogger`` with these changes.

* It can leave out the ``epoch`` metric Lightning adds to every step's metrics. A run bounded by
  ``trainer.max_steps`` has no epochs (its ``epoch`` is 0 throughout), so fit logs without it.
* Each step's metrics reach MLflow in the glossary's order (``lit_nash.glossary.LABELS``), the duality gap
  first: MLflow's "Compare" page colours its parallel-coordinates plot by the first metric a run logged.
* It samples MLflow's own system metrics (``system/``: CPU, memory, disk, network, and GPU where NVML finds
  one) every ``system_metrics_every`` seconds from the moment its run exists until the run ends; the samples
  of the last, partial interval are logged too, so even a run shorter than the interval has one point (taken at
  its end, its CPU share over the whole run). A
  resumed run continues the earlier run's system-metric steps, from the moment training starts
  (``start_system_metrics``, called by ``lit_nash.run_status``): a resume that fails while the checkpoint is
  restored leaves the earlier run as it was.
* With ``leave_open``, the end of ``trainer.fit`` does not mark the run FINISHED or FAILED: ``fit`` does, after
  it uploaded the run's files and saw whether the run reached its last step (``lit_nash.run_status``).
* ``log_steps`` writes the metrics of many steps in one request (a metric kept for every step, without a
  request each).
"""

from __future__ import annotations

from time import time
from typing import Any

from lightning.pytorch.loggers import MLFlowLogger as _LightningMLFlowLogger
from lightning.pytorch.utilities import rank_zero_only

from lit_nash.glossary import LABELS

ORDER = {key: i for i, key in enumerate(LABELS)}


class MLFlowLogger(_LightningMLFlowLogger):
    def __init__(self, *args: Any, log_epoch: bool = True, leave_open: bool = False, system_metrics_every: float | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.log_epoch = log_epoch
        self.leave_open = leave_open
        if system_metrics_every is not None and not system_metrics_every > 0:
            raise ValueError(f"logger.system_metrics_every must be > 0 seconds (or null for none), got {system_metrics_every}")
        self.system_metrics_every = system_metrics_every
        self._monitor = None
        self._resumed = self._run_id is not None
        self._held = self._resumed  # an earlier run is sampled only once its resume restored the checkpoint

    @property
    def experiment(self):
        client = _LightningMLFlowLogger.experiment.fget(self)
        if not self._held:
            self.start_system_metrics()
        return client

    def start_system_metrics(self) -> None:
        """Training started (a resumed run: its checkpoint is restored): sample from here on."""
        self._held = False
        if self.system_metrics_every and self._monitor is None and self._run_id is not None:
            self._start_monitor()

    def _start_monitor(self) -> None:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        self._monitor = SystemMetricsMonitor(self._run_id, sampling_interval=self.system_metrics_every,
                                             resume_logging=self._resumed, tracking_uri=self._tracking_uri)
        self._first_step = self._monitor._logging_step
        self._monitor.start()

    def stop_system_metrics(self) -> None:
        """Stop sampling and log what the last, partial interval collected."""
        monitor, self._monitor = self._monitor, None
        if monitor is None:
            return
        monitor.finish()
        if monitor._logging_step == self._first_step:  # nothing published yet: the only sample is the one taken at
            for part in monitor.monitors:  # the start, whose CPU share covers no time (psutil's first reading is 0);
                part.clear_metrics()  # one sample now covers the whole run instead
            monitor.collect_metrics()
        pending = monitor.aggregate_metrics()
        if pending:
            monitor.publish_metrics(pending)
            monitor.mlflow_logger.flush()

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if not self.log_epoch:
            metrics = {k: v for k, v in metrics.items() if k != "epoch"}
        if metrics:
            metrics = dict(sorted(metrics.items(), key=lambda kv: (ORDER.get(kv[0], len(ORDER)), kv[0])))
            super().log_metrics(metrics, step)

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        self.stop_system_metrics()
        if not self.leave_open:
            super().finalize(status)

    def log_steps(self, entries: list[tuple[int, dict[str, float]]]) -> None:
        """(step, metrics) of many steps in as few requests as MLflow allows (1000 metrics each)."""
        from mlflow.entities import Metric

        timestamp = int(time() * 1000)
        metrics = [Metric(key=k, value=float(v), timestamp=timestamp, step=step) for step, m in entries for k, v in m.items()]
        for i in range(0, len(metrics), 1000):
            self.experiment.log_batch(run_id=self.run_id, metrics=metrics[i : i + 1000], **self._log_batch_kwargs)
