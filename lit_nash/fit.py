"""``python -m lit_nash fit``: the training recipe, top to bottom.

The parts are built from ``conf/fit.yaml`` by ``lit_nash.build`` (the only place that instantiates); the
parts below receive built objects. One run = one game, one algorithm, one policy with its reference, one preference oracle, one
DataModule, one Lightning Trainer and one MLflow run.
"""

from __future__ import annotations

import logging
import secrets
import signal
import sys
import time
import warnings
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf


@hydra.main(version_base="1.3", config_path="pkg://lit_nash.conf", config_name="fit")
def main(cfg: DictConfig) -> float:
    from lit_nash.cli import run_folder_settled

    with run_folder_settled():  # a run refused before it wrote anything leaves no run folder
        return fit(cfg)


def fit(cfg: DictConfig) -> float | None:
    """Train one run; returns the final duality gap on a game, else the last training loss (the objective
    a Hydra sweeper minimizes)."""
    from lit_nash.build import check_config
    from lit_nash.tracking import check_store

    check_config(cfg)
    check_store(cfg.logger.get("tracking_uri"), "logger.tracking_uri", "fit")  # before resume= reads the store
    import lightning as L  # imported here so that --help and config errors answer without loading torch

    from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    from lit_nash.build import build_callbacks, build_logger, build_run, build_trainer
    from lit_nash.cli import training_started
    from lit_nash.checkpointing import (LAST, AtomicCheckpointIO, CheckpointWriteError, LastCheckpoint, RunRecord,
                                        StopOnSignal, check_owner)
    from lit_nash.export import check_export_dir, export_at_end
    from lit_nash.progress import progress_bar
    from lit_nash.rng import RNGCheckpoint
    from lit_nash.run_summary import log_summary
    from lit_nash.sweep_run import parent_tags
    from lit_nash.rollout_metrics import RolloutMetrics
    from lit_nash.run_status import RunStatus, reached_max_steps, rounding_note, settled
    from lit_nash.sweep_resume import continue_hint, continued_job
    from lit_nash.tracking import flat_params, log_run_files, prepare_store, summary_line

    if HydraConfig.initialized():  # Hydra's job_logging (conf/fit.yaml) routes every record: to the run's log
        for name in ("lightning", "lightning.pytorch", "lightning.fabric"):  # file; their own console handlers
            logging.getLogger(name).handlers.clear()  # would print each INFO line on the terminal a second time
            logging.getLogger(name).propagate = True
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    resume_from, run = None, {}
    if cfg.get("resume") and (job := continued_job(cfg)) is not None:  # a job of fit -m resume=<sweep folder>
        if job.kept:
            return None  # it finished before the sweep stopped
        cfg.resume = str(job.checkpoint) if job.checkpoint else None
    if cfg.get("resume"):
        cfg, resume_from, run = _resume(cfg)
        choices = {}  # the command's group choices are not the run's: its config is the checkpoint's
    if cfg.trainer.get("enable_checkpointing", True) is not False and rank_zero_only.rank == 0:
        check_owner(Path(cfg.checkpoint.dir) / LAST, resume_from)  # a run writes only its own last.ckpt
    if rank_zero_only.rank == 0:
        check_export_dir(cfg, run.get("uuid"))  # export.dir: empty, new, or this run's own earlier export
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    parts = build_run(cfg, choices)
    game, algorithm = parts.game, parts.algorithm
    if rank_zero_only.rank == 0 and (note := rounding_note(algorithm, cfg.rollout.mode == "sampled", cfg.trainer.max_steps)):
        print(note, file=sys.stderr)  # EGPO's max_steps=3 trains 4 steps: said once, here

    task = (choices.get("game") or game.name) if game is not None else Path(str(cfg.data.path)).stem
    tags = {"algo": algorithm.name, "game" if game is not None else "data": task, "seed": str(cfg.seed),
            "task": choices.get("task") or "none", "rollout": str(cfg.rollout.mode), "iterate": algorithm.iterate,
            "target": algorithm.converges_to, **_sweep_tags(choices)}
    if game is not None:  # the game's size: runs of different sizes are different tasks (compare, the benchmark)
        tags["responses"] = str(getattr(game, "num_responses", None) or game.P.shape[-1])
    tags.update(parent_tags(cfg))  # a sweep's job: nested under the sweep's MLflow run (lit_nash.sweep_run)
    if rank_zero_only.rank == 0:  # runs starting at once create a new sqlite store one at a time
        prepare_store(cfg.logger.get("tracking_uri"), cfg.logger.get("experiment_name"), "logger.tracking_uri", "fit")
    by_steps = cfg.trainer.get("max_epochs") in (None, -1) and cfg.trainer.get("max_steps") not in (None, -1)
    logger = build_logger(  # a default name gets a unique suffix: runs of the same settings differ in the MLflow UI
        cfg, tags=tags, run_name=cfg.logger.get("run_name") or f"{tags['algo']}-{task}-seed{cfg.seed}-{secrets.token_hex(3)}",
        log_epoch=not by_steps,  # a max-steps run has no epochs: no `epoch` metric
        leave_open=True,  # the run's final status is set below, after its files are uploaded (lit_nash.run_status)
        **({"run_id": run["run_id"]} if run.get("run_id") else {}),  # a resumed run logs on into its own MLflow run
    )
    saving = cfg.trainer.get("enable_checkpointing", True) is not False
    checkpoint = LastCheckpoint(cfg.checkpoint.dir, cfg.checkpoint.every_n_steps) if saving else None
    stop = StopOnSignal(checkpoint) if saving else None
    record = RunRecord(OmegaConf.to_container(cfg, resolve=True), str(checkpoint.path) if saving else None,
                       run.get("uuid"))
    stats = RolloutMetrics() if parts.data.sampled else None  # the loss and rollout statistics, first and last step too
    status = RunStatus(reopens=bool(run.get("run_id")))  # FINISHED only at max_steps, after the upload
    callbacks = [c for c in (algorithm, parts.metrics, stats, parts.evaluation, RNGCheckpoint(cfg.seed), record, status, stop,
                             checkpoint) if c is not None]
    callbacks += build_callbacks(cfg.get("callbacks"))  # the user's own
    if cfg.trainer.get("enable_progress_bar", True):
        callbacks.append(progress_bar())
    trainer: L.Trainer = build_trainer(cfg, logger=logger, callbacks=callbacks)
    if trainer.progress_bar_callback is not None and hasattr(trainer.progress_bar_callback, "watch"):
        trainer.profiler = trainer.progress_bar_callback.watch(trainer.profiler)  # the bar names the step's phase
    parts.rollouts.profiler = trainer.profiler
    if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # a sharded save swaps its folder in (sharding.py)
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()
    if not run.get("run_id"):  # a new MLflow run (a resumed one too, when its store moved or was deleted)
        logger.log_hyperparams(flat_params(OmegaConf.to_container(cfg, resolve=True)))
    if trainer.is_global_zero and getattr(logger, "run_id", None):  # the run page's whole config, as resolved
        logger.experiment.log_text(logger.run_id, OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")

    start = time.perf_counter()
    training_started()  # a failure from here on keeps the run folder, marked FAILED (lit_nash.cli)
    with warnings.catch_warnings():  # ModelCheckpoint asks manual-optimization modules to keep pre-step weights
        warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")
        # third-party deprecations inside Lightning and transformers, nothing a user can act on
        warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning)
        warnings.filterwarnings("ignore", message=r"`past_key_values` is deprecated", category=FutureWarning)
        with settled(trainer, status, stop):  # the MLflow run's final status, once its files are uploaded
            try:
                trainer.fit(parts.policy, datamodule=parts.data, ckpt_path=resume_from, weights_only=True)  # tensors and plain values only
            except CheckpointWriteError as e:  # the previous checkpoint stays
                raise SystemExit(f"lit_nash fit: {e}") from None
            final = parts.metrics.final(parts.policy) if parts.metrics is not None else stats.last if stats is not None else {
                k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")
            }
            if trainer.is_global_zero:
                seconds = time.perf_counter() - start
                line = summary_line(tags, trainer.global_step, seconds, final, logger.run_id, cfg.logger.tracking_uri,
                                    parts.evaluation.last if parts.evaluation is not None else None)
                print(line)
                logging.getLogger(__name__).info(line)  # the run's log file ends with it too
                if getattr(logger, "run_id", None):
                    log_run_files(logger.experiment, logger.run_id, checkpoint.path if saving else None)
                    log_summary(logger.experiment, logger.run_id, cfg, tags, seconds, trainer.global_step, parts.metrics,
                                parts.policy.network)  # sortable results, the converged tag, the run's description
    if stop is not None and stop.signal_name and not reached_max_steps(trainer):
        line = (f"lit_nash fit: stopped by {stop.signal_name} after step {trainer.global_step} of {trainer.max_steps}; "
                f"checkpoint {checkpoint.path}. {continue_hint(logger.run_id or checkpoint.path)}")
        print(line, file=sys.stderr)
        logging.getLogger(__name__).info(line)  # the run's log file says how to continue too
        raise SystemExit(128 + int(getattr(signal, stop.signal_name)))
    if trainer.is_global_zero and (cfg.get("export") or {}).get("dir") is not None:  # the run finished: its model leaves lit_nash
        export_at_end(parts.network, cfg, record.uuid, getattr(logger, "run_id", None), trainer.global_step)
    return final.get("game/duality_gap", final.get("train/loss"))


def _sweep_tags(choices) -> dict[str, str]:
    """Under ``-m``: the sweep (its preset's name, else its folder) and the job's number in it."""
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return {}
    hydra = HydraConfig.get()
    folder = Path(hydra.runtime.cwd) / hydra.sweep.dir
    return {"sweep": choices.get("sweep") or str(folder), "sweep_job": str(hydra.job.num)}


def _resume(cfg: DictConfig):
    """The run a ``resume=`` names: its checkpoint, its own config (what the command may change applied) and
    its MLflow run."""
    from lit_nash.checkpoint_integrity import check_resumable
    from lit_nash.checkpointing import find_checkpoint, load_checkpoint, read_run, resumed_config
    from lit_nash.policy.base_model import follow
    from lit_nash.tracking import run_exists

    path = find_checkpoint(cfg.resume, cfg.logger.get("tracking_uri"), cfg.logger.get("experiment_name"))
    check_resumable(path, cfg.resume)  # every file, shards included, before anything is built or reopened
    stored, run = read_run(path)
    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    named = any(o.lstrip("+").split("=", 1)[0] == "policy.model_path" for o in overrides)  # a LoRA base that moved
    follow(stored, load_checkpoint(path, "fit resume", mmap=True), cfg.policy.model_path if named else None, cfg.resume)
    config = resumed_config(cfg, stored, overrides)
    if run.get("tracking_uri") and run["tracking_uri"] != config.logger.get("tracking_uri"):
        run = {k: v for k, v in run.items() if k == "uuid"}  # the store moved: log into a new run of the configured store
    elif run.get("run_id") and not run_exists(config.logger.get("tracking_uri"), run["run_id"]):
        print(f"lit_nash fit: MLflow run {run['run_id']} is not in {config.logger.get('tracking_uri')} (the store was "
              f"deleted or replaced); the checkpoint is intact: the run continues, logging into a new MLflow run",
              file=sys.stderr)
        run = {k: v for k, v in run.items() if k == "uuid"}
    print(f"lit_nash fit: resuming from {path}" + (f" (MLflow run {run['run_id']})" if run.get("run_id") else ""),
          file=sys.stderr)
    return config, str(path), run
