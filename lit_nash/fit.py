"""``python -m lit_nash fit``: the training recipe, top to bottom.

Everything is instantiated here, at the edge, from ``conf/fit.yaml``; the parts below receive built
objects. One run = one game, one algorithm, one policy with its reference, one preference oracle, one
DataModule, one Lightning Trainer and one MLflow run.
"""

from __future__ import annotations

import inspect
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict


@hydra.main(version_base="1.3", config_path="pkg://lit_nash.conf", config_name="fit")
def main(cfg: DictConfig) -> float:
    return fit(cfg)


def fit(cfg: DictConfig) -> float:
    """Train one run; returns the final duality gap (the objective a Hydra sweeper minimizes)."""
    import lightning as L  # imported here so that --help and config errors answer without loading torch

    from lit_nash.metrics import GameMetrics
    from lit_nash.progress import progress_bar
    from lit_nash.rng import RNGCheckpoint
    from lit_nash.tracking import flat_params, summary_line

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}

    game = instantiate(cfg.game)
    if cfg.policy.get("model_path", "") is None:  # an LM task without a model: a random-init tiny LM for the game
        from lit_nash.models import tiny_causal_lm

        with open_dict(cfg):
            cfg.policy.model_path = str(tiny_causal_lm(Path(cfg.output_dir) / "tiny_lm", game.vocabulary(), seed=cfg.seed))
    # built objects go in through partials: instantiate(cfg, obj=...) would merge them into the config
    build_preference = instantiate(cfg.preference, _partial_=True)
    if "game" not in inspect.signature(build_preference.func).parameters:
        raise ValueError(
            f"preference={choices.get('preference', cfg.preference._target_)} scores text and is not wired into fit "
            "yet; fit trains against a game's exact oracle: preference=game (matrix games) or token_game"
        )
    preference = build_preference(game=game)
    algorithm = instantiate(cfg.algo)
    policy = instantiate(cfg.policy, _partial_=True)(game=game, algorithm=algorithm, preference=preference)
    data = instantiate(cfg.data, num_prompts=game.num_prompts)
    metrics = GameMetrics(tau=cfg.metrics.tau)

    tags = {"algo": algorithm.name, "game": choices.get("game", game.name), "seed": str(cfg.seed)}
    logger = instantiate(
        cfg.logger, tags=tags, run_name=cfg.logger.get("run_name") or f"{tags['algo']}-{tags['game']}-seed{cfg.seed}"
    )
    callbacks = [algorithm, metrics, RNGCheckpoint()]
    if cfg.trainer.get("enable_progress_bar", True):
        callbacks.append(progress_bar())
    trainer: L.Trainer = instantiate(cfg.trainer, logger=logger, callbacks=callbacks)
    logger.log_hyperparams(flat_params(OmegaConf.to_container(cfg, resolve=True)))

    start = time.perf_counter()
    trainer.fit(policy, datamodule=data, ckpt_path=cfg.ckpt_path)
    final = metrics.final(policy)
    if trainer.is_global_zero:
        seconds = time.perf_counter() - start
        print(summary_line(tags, trainer.global_step, seconds, final, logger.run_id, cfg.logger.tracking_uri))
    return final["game/duality_gap"]
