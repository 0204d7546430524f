"""MLflow glue: flattened params for a run, the run's record in its checkpoints and MLflow tags, and the
one-line summary that says where the run went."""

from __future__ import annotations

from typing import Any

import lightning as L

CONFIG_KEY = "lit_nash_config"  # the checkpoint entry that holds the run's resolved config
RUN_KEY = "lit_nash_run"  # and the one that names its MLflow run (run_id, tracking_uri), so a resume continues it


def flat_params(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"algo": {"eta": 1}}`` → ``{"algo.eta": 1}``; lists become strings (MLflow params are flat)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flat_params(value, prefix=f"{name}."))
        else:
            flat[name] = value if isinstance(value, (int, float, str, bool, type(None))) else str(value)
    return flat


def summary_line(tags: dict[str, str], steps: int, seconds: float, final: dict[str, float], run_id: str | None, tracking_uri: str | None) -> str:
    gaps = " ".join(f"{k}={v:.3g}" for k, v in final.items())
    line = f"lit_nash fit: {tags['algo']} on {tags.get('game') or tags.get('data')} (seed {tags['seed']}), {steps} steps in {seconds:.1f}s | {gaps}"
    if run_id:
        line += f" | MLflow run {run_id}: mlflow ui --backend-store-uri {tracking_uri}"
    return line


class RunRecord(L.Callback):
    """Makes a run reloadable and resumable: every checkpoint carries the run's resolved config and its MLflow
    run (plain values, so ``torch.load(weights_only=True)`` still reads them), and the MLflow run gets the
    tag ``checkpoint`` with its checkpoint's path as soon as it starts (``resume=<run id>`` finds it even
    after a SIGKILL)."""

    def __init__(self, config: dict[str, Any], checkpoint_path: str | None = None):
        self.config = config
        self.checkpoint_path = checkpoint_path
        self.run: dict[str, Any] = {}

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = trainer.logger
        run_id = getattr(logger, "run_id", None) if trainer.is_global_zero else None
        if run_id:
            self.run = {"run_id": run_id, "tracking_uri": getattr(logger, "_tracking_uri", None)}
            if self.checkpoint_path:
                logger.experiment.set_tag(run_id, "checkpoint", self.checkpoint_path)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint[CONFIG_KEY] = self.config
        checkpoint[RUN_KEY] = self.run
