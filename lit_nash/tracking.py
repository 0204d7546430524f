"""MLflow glue: flattened params for a run, and the one-line summary that says where the run went."""

from __future__ import annotations

from typing import Any


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
