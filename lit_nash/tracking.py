"""MLflow glue: flattened params for a run, the run's record in its checkpoints and MLflow tags, and the
one-line summary that says where the run went."""

from __future__ import annotations

from typing import Any

import lightning as L

CONFIG_KEY = "lit_nash_config"  # the checkpoint entry that holds the run's resolved config


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
    """Makes a run reloadable by ``python -m lit_nash eval``: every checkpoint carries the run's resolved
    config (plain values, so ``torch.load(weights_only=True)`` still reads it), and the MLflow run gets the
    tag ``checkpoint`` with the final checkpoint's path."""

    def __init__(self, config: dict[str, Any]):
        self.config = config

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint[CONFIG_KEY] = self.config

    def tag_checkpoint(self, trainer: L.Trainer) -> None:
        saver, logger = trainer.checkpoint_callback, trainer.logger
        path = (saver.best_model_path or saver.last_model_path) if saver is not None else ""
        if path and trainer.is_global_zero and getattr(logger, "run_id", None):
            logger.experiment.set_tag(logger.run_id, "checkpoint", str(path))
