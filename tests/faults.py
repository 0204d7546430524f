"""Faults injected into real runs through the CLI (``+callbacks.fault._target_=tests.faults.KillAt`` or
``preference._target_=tests.faults.NaNGameOracle``): the subprocess finds them because the tests put the
repository on PYTHONPATH. Each fires once, at a given optimizer step, in the middle of that step."""

from __future__ import annotations

import errno
import os
import signal
import time

import lightning as L
import torch

from lit_nash.preference import GameOracle


class KillAt(L.Callback):
    """``os.kill(self, sig)`` inside optimizer step ``step`` (after sampling, before the weights change):
    SIGKILL dies on the spot; SIGTERM and SIGINT go through the run's handlers."""

    def __init__(self, step: int, sig: str = "SIGKILL"):
        self.step, self.sig = int(step), getattr(signal, sig)

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        if trainer.global_step + 1 == self.step:
            os.kill(os.getpid(), self.sig)


class DiskFullAt(L.Callback):
    """From optimizer step ``step`` on, the disk is full: ``torch.save`` writes a little of a checkpoint, then
    fails with ENOSPC, as a write to a full disk does (no real disk is filled)."""

    def __init__(self, step: int):
        self.step = int(step)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:  # before the checkpoint callback, which Lightning runs last

            def full(obj, f, *args, **kwargs):
                f.write(b"the first bytes of a checkpoint")
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            torch.save = full


class PoisonAt(L.Callback):
    """Writes NaN into the policy's first parameter before optimizer step ``step``: its log-probs go NaN."""

    def __init__(self, step: int):
        self.step = int(step)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx) -> None:
        if trainer.global_step + 1 == self.step:
            with torch.no_grad():
                next(pl_module.parameters()).view(-1)[0] = float("nan")


class NaNGameOracle(GameOracle):
    """The game's exact oracle, except that its ``nan_at_call``-th ``prob`` call returns NaN everywhere."""

    def __init__(self, game, nan_at_call: int):
        super().__init__(game)
        self.nan_at_call, self.calls = int(nan_at_call), 0

    def prob(self, prompt, a, b):
        self.calls += 1
        p = super().prob(prompt, a, b)
        return torch.full_like(p, float("nan")) if self.calls == self.nan_at_call else p


class SlowGameOracle(GameOracle):
    """The game's exact oracle, except that each ``prob`` call first sleeps ``seconds`` (a long ``eval`` to send
    a signal to), or raises with ``error`` (an ``eval`` that fails half-way)."""

    def __init__(self, game, seconds: float = 0.0, error: bool = False):
        super().__init__(game)
        self.seconds, self.error = float(seconds), bool(error)

    def prob(self, prompt, a, b):
        if self.error:
            raise RuntimeError("tests.faults.SlowGameOracle: the injected failure")
        time.sleep(self.seconds)
        return super().prob(prompt, a, b)


class FailShardedSaveAt(L.Callback):
    """The sharded checkpoint save at optimizer step ``step`` fails midway on rank ``rank``: that rank writes
    its shard, then raises before the save completes (the other ranks have written theirs, or are writing).
    Lightning then kills the other processes (its child-process observer), as a crash mid-save would."""

    def __init__(self, step: int, rank: int = 1):
        self.step, self.rank = int(step), int(rank)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step and trainer.global_rank == self.rank:  # before the checkpoint callback
            from lightning.pytorch.strategies import model_parallel

            real = model_parallel._distributed_checkpoint_save

            def fail(state, path):
                real(state, path)
                raise RuntimeError(f"tests.faults.FailShardedSaveAt: the sharded save into {path} failed midway")

            model_parallel._distributed_checkpoint_save = fail


class InterruptJob(L.Callback):
    """Ctrl+C in job ``job`` of a sweep (Hydra's job number), inside its optimizer step ``step``: the SIGINT a
    terminal sends. Other jobs, and a resumed job (it starts after that step), are left alone."""

    def __init__(self, job: int, step: int, sig: str = "SIGINT"):
        self.job, self.step, self.sig = int(job), int(step), getattr(signal, sig)

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.get().job.num == self.job and trainer.global_step + 1 == self.step:
            os.kill(os.getpid(), self.sig)


class KillDuringUpload(L.Callback):
    """SIGKILL while the run's checkpoint is being uploaded to MLflow's local artifact store: the upload's
    temporary file (``.artifact.uploading.*``) is written and not yet renamed into place."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

        publish = LocalArtifactRepository._publish_staged_artifact

        def killed(repo, temp_file_path, destination_file_path, *args, **kwargs):
            if destination_file_path.endswith(".ckpt"):
                os.kill(os.getpid(), signal.SIGKILL)
            return publish(repo, temp_file_path, destination_file_path, *args, **kwargs)

        LocalArtifactRepository._publish_staged_artifact = killed


class StopAt(L.Callback):
    """Ends training after optimizer step ``step`` the way any callback may (``trainer.should_stop``: an early
    stopping rule, a time limit), without a signal or an error."""

    def __init__(self, step: int):
        self.step = int(step)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            trainer.should_stop = True


class SkipLayerInPush(L.Callback):
    """From the start of training, the vLLM generator's weight pushes on rank ``rank`` (every rank: null) leave
    out every tensor of layer ``layer``: the engine keeps that layer's weights as they were first loaded."""

    def __init__(self, layer: int = 1, rank: int | None = None):
        self.layer, self.rank = f".layers.{int(layer)}.", rank

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.rank is not None and trainer.global_rank != self.rank:
            return
        generator = trainer.datamodule.rollouts.generator
        push = generator._state
        generator._state = lambda model, snapshot: ((n, t) for n, t in push(model, snapshot) if self.layer not in n)
