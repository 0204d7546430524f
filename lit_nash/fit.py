"""``python -m lit_nash fit``: the training recipe, top to bottom.

Everything is instantiated here, at the edge, from ``conf/fit.yaml``; the parts below receive built
objects. One run = one game, one algorithm, one policy with its reference, one preference oracle, one
DataModule, one Lightning Trainer and one MLflow run.
"""

from __future__ import annotations

import inspect
import signal
import sys
import time
import warnings
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict


@hydra.main(version_base="1.3", config_path="pkg://lit_nash.conf", config_name="fit")
def main(cfg: DictConfig) -> float:
    return fit(cfg)


def fit(cfg: DictConfig) -> float | None:
    """Train one run; returns the final duality gap on a game, else the last training loss (the objective
    a Hydra sweeper minimizes)."""
    import lightning as L  # imported here so that --help and config errors answer without loading torch

    from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

    from lit_nash.checkpointing import AtomicCheckpointIO, LastCheckpoint, StopOnSignal
    from lit_nash.evaluation import PeriodicEval
    from lit_nash.metrics import GameMetrics
    from lit_nash.progress import progress_bar
    from lit_nash.rng import RNGCheckpoint
    from lit_nash.tracking import RunRecord, flat_params, summary_line

    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    resume_from, run = None, {}
    if cfg.get("resume"):
        cfg, resume_from, run = _resume(cfg)
        choices = {}  # the command's group choices are not the run's: its config is the checkpoint's
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    game, data = build_game_and_data(cfg, choices)
    build_tiny_model(cfg, game)
    preference = build_preference(cfg.preference, game, choices.get("preference"))
    algorithm = instantiate(cfg.algo)
    policy = build_policy(cfg, game, data, algorithm, preference)
    if hasattr(preference, "read_with") and not hasattr(policy, "decode"):
        raise ValueError(f"preference={choices.get('preference')} judges text and policy={choices.get('policy')} "
                         "writes none: use a language-model policy (task=token_game or task=text)")
    metrics = GameMetrics(game.P, tau=cfg.metrics.tau) if game is not None else None

    task = (choices.get("game") or game.name) if game is not None else Path(str(cfg.data.path)).stem
    tags = {"algo": algorithm.name, "game" if game is not None else "data": task, "seed": str(cfg.seed)}
    logger = instantiate(
        cfg.logger, tags=tags, run_name=cfg.logger.get("run_name") or f"{tags['algo']}-{task}-seed{cfg.seed}",
        **({"run_id": run["run_id"]} if run.get("run_id") else {}),  # a resumed run logs on into its own MLflow run
    )
    evaluation = PeriodicEval(**cfg.eval, seed=cfg.seed) if cfg.get("eval") and cfg.eval.every_n_steps else None
    saving = cfg.trainer.get("enable_checkpointing", True) is not False
    checkpoint = LastCheckpoint(cfg.checkpoint.dir, cfg.checkpoint.every_n_steps) if saving else None
    stop = StopOnSignal(checkpoint) if saving else None
    record = RunRecord(OmegaConf.to_container(cfg, resolve=True), str(checkpoint.path) if saving else None)
    callbacks = [c for c in (algorithm, metrics, evaluation, RNGCheckpoint(cfg.seed), record, stop, checkpoint) if c is not None]
    callbacks += [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]  # the user's own
    if cfg.trainer.get("enable_progress_bar", True):
        callbacks.append(progress_bar())
    trainer: L.Trainer = instantiate(cfg.trainer, logger=logger, callbacks=callbacks)
    if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # FSDP's sharded checkpoints keep their own
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()
    if resume_from is None:
        logger.log_hyperparams(flat_params(OmegaConf.to_container(cfg, resolve=True)))
    elif trainer.is_global_zero and getattr(logger, "run_id", None):
        logger.experiment.update_run(logger.run_id, status="RUNNING")

    start = time.perf_counter()
    with warnings.catch_warnings():  # ModelCheckpoint asks manual-optimization modules to keep pre-step weights
        warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")
        trainer.fit(policy, datamodule=data, ckpt_path=resume_from, weights_only=True)  # tensors and plain values only
    final = metrics.final(policy) if metrics is not None else {
        k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")
    }
    if trainer.is_global_zero:
        seconds = time.perf_counter() - start
        print(summary_line(tags, trainer.global_step, seconds, final, logger.run_id, cfg.logger.tracking_uri))
    if stop is not None and stop.signal_name:
        if trainer.is_global_zero and getattr(logger, "run_id", None):
            logger.experiment.set_terminated(logger.run_id, status="KILLED")
        print(f"lit_nash fit: stopped by {stop.signal_name} after step {trainer.global_step}; checkpoint "
              f"{checkpoint.path}. Continue with: python -m lit_nash fit resume={logger.run_id or checkpoint.path}",
              file=sys.stderr)
        raise SystemExit(128 + int(getattr(signal, stop.signal_name)))
    return final.get("game/duality_gap", final.get("train/loss"))


def _resume(cfg: DictConfig):
    """The run a ``resume=`` names: its checkpoint, its own config (what the command may change applied) and
    its MLflow run."""
    from lit_nash.checkpointing import find_checkpoint, read_run, resumed_config

    path = find_checkpoint(cfg.resume, cfg.logger.get("tracking_uri"), cfg.logger.get("experiment_name"))
    stored, run = read_run(path)
    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    config = resumed_config(cfg, stored, overrides)
    if run.get("tracking_uri") and run["tracking_uri"] != config.logger.get("tracking_uri"):
        run = {}  # the store moved: log into a new run of the configured store
    print(f"lit_nash fit: resuming from {path}" + (f" (MLflow run {run['run_id']})" if run.get("run_id") else ""),
          file=sys.stderr)
    return config, str(path), run


# -- the parts of a run, built from its config (also how ``eval`` rebuilds a policy from a checkpoint) ------
def build_game_and_data(cfg: DictConfig, choices: dict | None = None):
    """The game (None for a prompt dataset) and the DataModule; a run needs exactly one source of prompts."""
    choices = choices or {}
    game = instantiate(cfg.game) if cfg.get("game") is not None else None
    if (game is None) != ("path" in cfg.data):
        raise ValueError(
            "a run takes its prompts from a game (game=<name> with data=game) or from a dataset (~game with "
            f"data=prompts data.path=<file>, as task=text does); got game={choices.get('game')} data={choices.get('data')}"
        )
    data = instantiate(cfg.data, **({} if game is None else {"num_prompts": game.num_prompts}))
    return game, data


def build_preference(node: DictConfig, game, choice: str | None = None):
    """The preference model of a ``preference`` config node; exact oracles read the game."""
    build = instantiate(node, _partial_=True)  # built objects go in through partials, not merged into the config
    if "game" in inspect.signature(build.func).parameters:
        if game is None:
            raise ValueError(
                f"preference={choice} is a game's exact oracle and there is no game; with a "
                "prompt dataset use a preference model: preference=pairwise, bradley_terry or judge"
            )
        return build(game=game)
    return build()


def build_tiny_model(cfg: DictConfig, game) -> None:
    """An LM task on a game without a model path gets a random-init tiny LM for the game's words, built in the
    run folder; its path is written into ``cfg`` (the token game's oracle reads its tokenizer, checkpoints name it)."""
    if cfg.policy.get("model_path", "") is not None:
        return
    if game is None:
        raise ValueError("policy.model_path is required when the prompts come from a dataset (game=null)")
    from lit_nash.models import tiny_causal_lm

    with open_dict(cfg):
        cfg.policy.model_path = str(tiny_causal_lm(Path(cfg.output_dir) / "tiny_lm", game.vocabulary(), seed=cfg.seed))


def build_policy(cfg: DictConfig, game, data, algorithm, preference):
    """The policy with its reference, playing the game's prompts or the dataset's."""
    sources = {"game": game} if game is not None else {"prompts": data.prompts}
    return instantiate(cfg.policy, _partial_=True)(algorithm=algorithm, preference=preference, **sources)
