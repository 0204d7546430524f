"""Crash-safe checkpoints, and resuming a run from one (``fit ... resume=<checkpoint | run | last>``).

A run writes ``<checkpoint.dir>/last.ckpt`` every ``checkpoint.every_n_steps`` optimizer steps, at the end,
and when SIGINT or SIGTERM asks it to stop. Every write goes to a temporary file in the same folder, is
flushed to disk, and is renamed over the previous file: a process killed at any moment (SIGKILL, power)
leaves the previous complete checkpoint, never a half-written one. A failing step (an exception, a
non-finite loss) writes nothing, so the last good checkpoint stays.

A checkpoint holds everything a run needs to continue bit-identically: the policy (or its adapters) and
every snapshot, the optimizer and schedulers, the algorithm's schedule state (callbacks' state), the loop
and data position (Lightning's loops; the prompt stream is keyed by the step), the RNG states
(``RNGCheckpoint``, every rank's), the resolved run config and the MLflow run it logs to (``RunRecord``).

Sharded training (``trainer=fsdp`` with ``strategy.save_distributed_checkpoint=true``) writes ``last.ckpt`` as a
folder: one shard file per rank, the shards' index and ``meta.pt`` (everything else, written by rank 0).
Every rank writes into a temporary sibling folder; once all are done, rank 0 swaps it in for the previous
one (``replace_path``), so a kill during a sharded save leaves the previous folder too
(``lit_nash.sharding``).
"""

from __future__ import annotations

import errno
import glob
import os
import re
import shutil
import signal
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint

from lit_nash.checkpoint_integrity import looks_sharded
from lit_nash.tracking import CONFIG_KEY, RUN_KEY, checkpoint_of_run, latest_checkpoint
from lit_nash.validate import integer

LAST = "last.ckpt"
META = "meta.pt"  # a sharded checkpoint folder's non-sharded part (Lightning's _METADATA_FILENAME)
PENDING = "lit_nash_pending_metrics"  # the saved step's metrics, not yet sent to the loggers when it was saved


def config_containers(node: Any, path: str = "checkpoint") -> list[str]:
    """Where a checkpoint holds OmegaConf containers (a DictConfig or ListConfig, e.g. a Hydra override's
    list kept in a module's hyperparameters): ``torch.load(weights_only=True)``, with which eval and resume
    read checkpoints, refuses them (``Unsupported global: GLOBAL omegaconf.dictconfig.DictConfig``)."""
    from omegaconf import OmegaConf

    if OmegaConf.is_config(node):
        return [f"{path} ({type(node).__name__})"]
    if isinstance(node, dict):
        return [p for key, value in node.items() for p in config_containers(value, f"{path}[{key!r}]")]
    if isinstance(node, (list, tuple)):
        return [p for i, value in enumerate(node) for p in config_containers(value, f"{path}[{i}]")]
    return []


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to a temporary file beside the target, fsync, then ``os.replace`` (atomic on POSIX and
    Windows): readers only ever see a complete old or a complete new checkpoint. Remote paths (``s3://``
    and other fsspec URLs) fall back to Lightning's own writer."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if found := config_containers(checkpoint):  # plain types only, or eval and resume cannot read it
            raise TypeError(f"a checkpoint must hold plain Python values and tensors, but it holds OmegaConf "
                            f"containers at {', '.join(found[:5])}: convert with OmegaConf.to_container")
        if "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable
                fd = os.open(path.parent, os.O_DIRECTORY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        except OSError as e:  # a full disk, a quota, a read-only or vanished folder: say which file, what is kept
            raise CheckpointWriteError(path, e) from e
        finally:
            tmp.unlink(missing_ok=True)


def is_sharded(path: Path) -> bool:
    """A sharded checkpoint: a folder with the shards and ``meta.pt`` (Lightning's own test)."""
    return path.is_dir() and (path / META).is_file()


def checkpoint_file(path: Path) -> Path:
    """The file that holds a checkpoint's run config, step and run record: the checkpoint file itself, or a
    sharded folder's ``meta.pt``."""
    return path / META if path.is_dir() else path


def _fsync(path: Path, folder: bool = False) -> None:
    if folder and not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(path, os.O_DIRECTORY if folder else os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``); False where the system or
    the filesystem cannot (then nothing changed)."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)  # glibc 2.28+
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):  # not on this filesystem
        return False
    raise OSError(code, os.strerror(code), str(b))


def replace_path(new: Path, path: Path) -> None:
    """Put the complete checkpoint ``new`` (a file or a sharded folder, a sibling of ``path``) at ``path``,
    replacing what is there, durably. A folder cannot be renamed over another, so the two are swapped
    atomically (``renameat2(RENAME_EXCHANGE)``) and the old one, now at ``new``, is removed. Where the
    filesystem cannot swap, the old one is renamed to ``.<name>.old-<pid>`` first: a kill between the two
    renames leaves no ``path`` but that complete previous checkpoint, which ``restore_interrupted_swap``
    puts back on the next start (or resume)."""
    for file in [new] if new.is_file() else [f for f in new.rglob("*") if f.is_file()]:
        _fsync(file)
    if new.is_dir():
        _fsync(new, folder=True)
    if not path.exists():
        os.rename(new, path)
    elif new.is_file() and path.is_file():
        os.replace(new, path)
    elif _exchange(new, path):
        _remove(new)  # the previous checkpoint
    else:
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        os.rename(path, old)
        os.rename(new, path)
        _remove(old)
    _fsync(path.parent, folder=True)  # make the renames themselves durable


class CheckpointWriteError(OSError):
    """A checkpoint write failed (the temporary file is removed): the message names the file, the error, the
    checkpoint that is kept and the fix. ``fit`` prints it as one line."""

    def __init__(self, path: Path, error: OSError):
        import errno

        super().__init__(error.errno, error.strerror)
        reason = error.strerror or str(error)
        full = error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
        fix = f"free space on that disk (df -h {str(path.parent)!r})" if full else f"make {str(path.parent)!r} writable"
        if path.exists():
            kept, fix = f"the previous one there is intact (step {_step(path)})", f"{fix}, then continue with resume={path}"
        else:
            kept = "no earlier checkpoint was there"
        self.message = f"could not write the checkpoint {str(path)!r} ({reason}); {kept}. The run stopped: {fix}"

    def __str__(self) -> str:
        return self.message


def _step(path: Path) -> Any:
    """The optimizer step a checkpoint file holds ('?' if it cannot be read)."""
    try:
        return torch.load(checkpoint_file(path), map_location="cpu", weights_only=True, mmap=True).get("global_step", "?")
    except Exception:
        return "?"


# AtomicCheckpointIO's temporary file, a sharded save's temporary folder, replace_path's previous checkpoint
_TEMPORARY = re.compile(r"\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Remove the temporary files and sharded folders (``.<name>.tmp-<pid>``) that a writer killed mid-write
    (SIGKILL, power) left in ``folder``: those whose process is gone. A live process's temporary is a write
    in progress and stays. A previous checkpoint that a killed swap left (``.<name>.old-<pid>``) is put back
    if ``<name>`` is missing (``restore_interrupted_swap``), else removed."""
    for name in {m["name"] for p in (folder.iterdir() if folder.is_dir() else ()) if (m := _TEMPORARY.fullmatch(p.name))}:
        restore_interrupted_swap(folder / name)
    stale = [p for p in (folder.iterdir() if folder.is_dir() else ())
             if (m := _TEMPORARY.fullmatch(p.name)) and not _alive(int(m["pid"]))]
    for p in stale:
        _remove(p)
    if stale:
        print(f"lit_nash fit: removed {len(stale)} temporary checkpoint file(s) left in {folder} by killed writers: "
              f"{', '.join(p.name for p in stale)}", file=sys.stderr)
    return stale


def restore_interrupted_swap(path: Path) -> bool:
    """``path`` is missing but a killed ``replace_path`` left its previous checkpoint (``.<name>.old-<pid>``,
    complete, of a process that is gone): rename it back. True if it did."""
    if path.exists() or not path.parent.is_dir():
        return False
    for p in path.parent.glob(f".{glob.escape(path.name)}.old-*"):
        if (m := _TEMPORARY.fullmatch(p.name)) and m["name"] == path.name and not _alive(int(m["pid"])):
            os.rename(p, path)
            print(f"lit_nash fit: {path} was being replaced when its writer was killed; put the previous checkpoint "
                  f"back ({p.name})", file=sys.stderr)
            return True
    return False



def check_owner(path: Path, resume_from: str | None) -> None:
    """A run writes only its own ``last.ckpt``: refuse a checkpoint file that belongs to another run (another
    run's uuid or MLflow run id, see ``RunRecord``), unless this command resumes that run."""
    if not path.exists() or (resume_from is not None and Path(resume_from).resolve() == path.resolve()):
        return
    theirs = _record(path)
    if resume_from is not None and _same_run(_record(Path(resume_from)), theirs):
        return
    who = f" (MLflow run {theirs['run_id']})" if theirs.get("run_id") else ""
    raise SystemExit(
        f"lit_nash fit: checkpoint.dir={str(path.parent)!r} already holds {str(path)!r}, the checkpoint of another "
        f"run{who}; this run would overwrite it. Give this run its own folder (checkpoint.dir=<empty folder>, or "
        f"leave checkpoint.dir at its default), or continue that run with resume={path}"
    )


def _record(path: Path) -> dict[str, Any]:
    """The run record a checkpoint carries ({} if it has none or cannot be read)."""
    try:
        return torch.load(checkpoint_file(path), map_location="cpu", weights_only=True, mmap=True).get(RUN_KEY) or {}
    except Exception:
        return {}


def _same_run(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return any(a.get(k) and a.get(k) == b.get(k) for k in ("uuid", "run_id"))


class LastCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint keeping only ``last.ckpt``: every N optimizer steps (0: only at the end and
    on a stop signal) and always at the end of training; never on an exception."""

    def __init__(self, dirpath: str, every_n_steps: int):
        every_n_steps = integer("checkpoint.every_n_steps", every_n_steps, 0, "0 = only at the end")
        super().__init__(dirpath=dirpath, save_top_k=0, save_last=True, every_n_train_steps=every_n_steps,
                         every_n_epochs=0, enable_version_counter=False, save_on_train_epoch_end=False)

    @property
    def path(self) -> Path:
        return Path(self.dirpath) / LAST

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if trainer.is_global_zero:
            remove_stale_temporaries(Path(self.dirpath))

    # Lightning sends a batch's metrics to the loggers after on_train_batch_end, where this callback saves:
    # a crash between the two would lose that step's metrics for good (the resumed run starts after it).
    # So the checkpoint carries them, and a resumed run logs them once more (same step, same values).
    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        connector = trainer._logger_connector
        if trainer.training and trainer.loggers and connector.should_update_logs:
            metrics = {k: float(v) for k, v in connector.metrics["log"].items()}
            checkpoint[PENDING] = {"step": trainer.fit_loop.epoch_loop._batches_that_stepped,
                                   "metrics": metrics | {"epoch": float(trainer.current_epoch)}}

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        self._pending = checkpoint.get(PENDING)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pending, self._pending = getattr(self, "_pending", None), None
        if pending and pending["metrics"]:
            for logger in trainer.loggers:
                logger.log_metrics(pending["metrics"], step=pending["step"])

    def save_now(self, trainer: L.Trainer) -> None:
        if self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.save_now(trainer)


class StopOnSignal(L.Callback):
    """SIGINT (Ctrl+C) or SIGTERM: finish the step in progress, write ``last.ckpt``, stop. A second Ctrl+C
    stops at once (the last checkpoint stays). ``signal_name`` says what stopped the run, if anything."""

    def __init__(self, checkpoint: LastCheckpoint):
        self.checkpoint = checkpoint
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if threading.current_thread() is threading.main_thread():  # Python delivers signals to the main thread
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.getsignal(sig)
                signal.signal(sig, self._received)

    def _received(self, signum: int, frame: Any) -> None:
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        if trainer.strategy.reduce_boolean_decision(self.signal_name is not None, all=False):
            self.signal_name = self.signal_name or "SIGTERM"  # another rank received it
            self.checkpoint.save_now(trainer)
            trainer.should_stop = True

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


# -- resume ----------------------------------------------------------------------------------------------
_RUN_ID = re.compile(r"[0-9a-f]{32}")
# what a resumed run's command may change; everything else comes from the checkpoint's config. The user's
# own callbacks always come from the command (a fault injected into the first run is not injected again).
RESUMABLE = ("trainer.max_steps", "trainer.enable_progress_bar", "checkpoint.every_n_steps")


def find_checkpoint(resume: str, tracking_uri: str | None, experiment: str | None) -> Path:
    """The checkpoint file that ``resume=`` names: a checkpoint file, a run folder (its
    ``checkpoints/last.ckpt``), an MLflow run id (its ``checkpoint`` tag), or ``last`` (the newest run of
    the experiment that has a checkpoint). A checkpoint is a file or a sharded folder (``trainer=fsdp``)."""
    resume = str(resume)
    path = Path(resume).expanduser()
    for candidate in (path, path / LAST, path / "checkpoints" / LAST):
        restore_interrupted_swap(candidate)
        if candidate.is_file() or looks_sharded(candidate):  # an incomplete sharded folder too: the check names what is missing
            return candidate
    if path.is_dir():
        raise FileNotFoundError(f"resume={resume!r}: the folder holds no {LAST} (nor checkpoints/{LAST})")
    if resume == "last":
        return latest_checkpoint(tracking_uri, experiment)
    if _RUN_ID.fullmatch(resume):
        return checkpoint_of_run(tracking_uri, resume)
    raise FileNotFoundError(
        f"resume={resume!r} is neither a checkpoint file, a run folder, an MLflow run id (32 hex digits) nor 'last'"
    )


_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")  # torch's weights-only unpickler names the global it refused


def load_checkpoint(path: Path, command: str, mmap: bool = False) -> dict[str, Any]:
    """A lit_nash checkpoint, read with ``torch.load(weights_only=True)`` (tensors and plain values only). A file
    that is not one exits with one line that names it: one that holds code or objects (a pickle global, which
    is never loaded), one that is no checkpoint at all (truncated, another format), and one without lit_nash's
    run config (another program's checkpoint)."""
    import pickle

    fix = "give a checkpoint written by `python -m lit_nash fit` (<run folder>/checkpoints/last.ckpt)"
    try:
        checkpoint = torch.load(checkpoint_file(path), map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        found = _GLOBAL.search(str(e))
        what = f"the global {found[1]}" if found else "objects other than tensors and plain values"
        raise SystemExit(f"lit_nash {command}: refusing {str(path)!r}: it holds code ({what}), which lit_nash never "
                         f"loads; it is not a lit_nash checkpoint: {fix}") from None
    except Exception as e:  # a truncated file, a text file, another serialization format
        first = str(e).strip().splitlines()[0].split(". ")[0] if str(e).strip() else ""  # torch's first sentence
        raise SystemExit(f"lit_nash {command}: {str(path)!r} is not a readable checkpoint (truncated, or not a torch "
                         f"checkpoint: {type(e).__name__}{': ' + first if first else ''}); {fix}") from None
    weights = isinstance(checkpoint, dict) and ("state_dict" in checkpoint or is_sharded(path))  # or in its shards
    if not isinstance(checkpoint, dict) or CONFIG_KEY not in checkpoint or not weights:
        raise SystemExit(f"lit_nash {command}: {str(path)!r} holds no run config: it was not written by "
                         "`python -m lit_nash fit`, so it is not a lit_nash checkpoint; give a fit run's "
                         "<run folder>/checkpoints/last.ckpt")
    return checkpoint


def read_run(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The resolved config and the MLflow run record a lit_nash checkpoint carries."""
    checkpoint = load_checkpoint(path, "fit resume", mmap=True)
    return checkpoint[CONFIG_KEY], checkpoint.get(RUN_KEY) or {}


def resumed_config(command: Any, stored: dict[str, Any], overrides: list[str]):
    """The run's own config, with what this command may change (``RESUMABLE``) taken from its overrides.

    An override of anything else that disagrees with the stored config is an error: a resumed run is the
    same run, and silently training a different one would not be."""
    from omegaconf import OmegaConf, open_dict

    def plain(node):
        return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node

    config = OmegaConf.create(stored)
    with open_dict(config):
        for override in overrides:
            key = override.lstrip("+~").split("=", 1)[0]
            if key == "resume" or key == "callbacks" or key.startswith("callbacks."):
                continue
            mine = plain(OmegaConf.select(command, key, default=None))
            if key in RESUMABLE:
                OmegaConf.update(config, key, mine, merge=False, force_add=True)
            elif mine != plain(OmegaConf.select(config, key, default=None)):
                raise ValueError(
                    f"resume: this command sets {override!r} but the run was trained with "
                    f"{key}={plain(OmegaConf.select(config, key, default=None))!r}; a resumed run keeps its config "
                    f"(a resume may change only {', '.join(RESUMABLE)})"
                )
        config.resume = command.resume
        config.callbacks = plain(command.get("callbacks")) or {}
    return config


class RunRecord(L.Callback):
    """Makes a run reloadable and resumable: every checkpoint carries the run's resolved config and its MLflow
    run (plain values, so ``torch.load(weights_only=True)`` still reads them), and the MLflow run gets the
    tag ``checkpoint`` with its checkpoint's path as soon as it starts (``resume=<run id>`` finds it even
    after a SIGKILL). The record holds a ``uuid`` of the run, kept across resumes, that says whose a
    checkpoint file is (``check_owner``), with or without MLflow."""

    def __init__(self, config: dict[str, Any], checkpoint_path: str | None = None, run_uuid: str | None = None):
        self.config = config
        self.checkpoint_path = checkpoint_path
        self.run: dict[str, Any] = {}
        self.uuid = run_uuid or uuid.uuid4().hex

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = trainer.logger
        run_id = getattr(logger, "run_id", None) if trainer.is_global_zero else None
        if run_id:
            self.run = {"run_id": run_id, "tracking_uri": getattr(logger, "_tracking_uri", None)}
            if self.checkpoint_path:
                logger.experiment.set_tag(run_id, "checkpoint", self.checkpoint_path)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint[CONFIG_KEY] = self.config
        checkpoint[RUN_KEY] = {**self.run, "uuid": self.uuid}


# -- reading and writing an MLflow store ----------------------------------------------------------------
