"""How a ``fit`` run ends in MLflow: one place sets its final status, once, after the run's files are uploaded.

- **FINISHED** only for a run that reached its ``trainer.max_steps`` (after an iteration's rounding) and whose
  files (log, checkpoint) are uploaded. A SIGKILL during the upload leaves the run RUNNING, never FINISHED
  without its checkpoint.
- **KILLED** for a run stopped before its last step (SIGINT, SIGTERM, a callback that stops the trainer).
- **FAILED** for an error.
- A **resumed** run is reopened (RUNNING) only when training starts, after Lightning restored every part of the
  checkpoint: a resume that fails before (an unreadable shard, a state that does not fit the model) leaves the
  earlier run exactly as it was, its status and end time included.

Every run carries the tags ``completed`` (``true`` once it reached ``max_steps``; ``false`` from its start on and
for a run stopped early), ``max_steps`` (the step count it trains to) and, once it ended, ``last_step``:
what ``compare`` reads to keep runs that stopped early apart from complete ones.

Lightning would mark the run FINISHED itself when ``trainer.fit`` returns, before ``fit`` uploads anything and
whatever step the run stopped at; fit's logger leaves that to this module (``MLFlowLogger(leave_open=True)``).
Stale ``.artifact.uploading.*`` files, which an upload killed half-way leaves in a local artifact store, are
removed when the run is resumed.
"""

from __future__ import annotations

import signal
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import lightning as L

COMPLETED, MAX_STEPS, LAST_STEP = "completed", "max_steps", "last_step"  # the run's tags
TARGET = "lit_nash_max_steps"  # the checkpoint entry: the step count the run trains to (after rounding)
UPLOADING = ".artifact.uploading."  # MLflow's local artifact store writes each upload to such a file, then renames it


def reached_max_steps(trainer: L.Trainer) -> bool:
    """Whether the run trained every step it was meant to (``max_steps``, or ``max_epochs`` for a run by epochs)."""
    if trainer.max_steps is not None and trainer.max_steps > 0:
        return trainer.global_step >= trainer.max_steps
    return trainer.max_epochs is not None and trainer.max_epochs > 0 and trainer.current_epoch >= trainer.max_epochs


def rounding_note(algorithm: Any, sampled: bool, max_steps: int) -> str | None:
    """The start-up line of an algorithm whose iteration takes several optimizer steps (EGPO's two calls,
    Nash-MP's inner steps) when ``max_steps`` is not a whole number of iterations: it is rounded up, so the
    last iteration completes (``Algorithm.setup``), and the run counts as complete only there."""
    n = int(algorithm.steps_per_iteration(sampled))
    if n <= 1 or max_steps % n == 0:
        return None
    rounded = -(-max_steps // n) * n
    return (f"lit_nash fit: algo={algorithm.name} takes {n} optimizer steps per iteration, so trainer.max_steps="
            f"{max_steps} is rounded up to {rounded}: the last iteration completes (set trainer.max_steps={rounded} "
            "to say so yourself)")


def stopped_by_signal(error: BaseException) -> bool:
    """Ctrl+C, or the exit Lightning and ``fit`` make for a signal (an exit status, not an error message)."""
    if isinstance(error, KeyboardInterrupt):
        return True
    return isinstance(error, SystemExit) and isinstance(error.code, int) and error.code != 0


def _mlflow(trainer: L.Trainer) -> tuple[Any, str | None]:
    logger = trainer.logger
    if not trainer.is_global_zero or logger is None or not hasattr(logger, "experiment"):
        return None, None
    return logger.experiment, getattr(logger, "run_id", None)


def remove_stale_uploads(client, run_id: str) -> list[Path]:
    """Remove the ``.artifact.uploading.*`` files of a run's local artifact folder: uploads that a killed process
    never finished (MLflow never removes them). Called where no upload of the run is in progress."""
    from urllib.parse import unquote, urlparse

    uri = client.get_run(run_id).info.artifact_uri or ""
    if "://" in uri and not uri.startswith("file://"):
        return []  # a remote store cleans its own
    folder = Path(unquote(urlparse(uri).path) if uri.startswith("file://") else uri)
    stale = sorted(folder.rglob(f"{UPLOADING}*")) if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        print(f"lit_nash fit: removed {len(stale)} half-written upload(s) of MLflow run {run_id} that a killed process "
              f"left: {', '.join(str(p.relative_to(folder)) for p in stale)}", file=sys.stderr)
    return stale


class RunStatus(L.Callback):
    """Opens the run's MLflow record when training starts and ends it (``end``) with the status its steps earned.

    ``reopens``: the run is an earlier MLflow run resumed from its checkpoint; it is touched only from
    ``on_train_start`` on, once the checkpoint is restored. A new run is open from its creation."""

    def __init__(self, reopens: bool = False):
        self.reopens = reopens
        self.opened = not reopens

    def _open(self, client, run_id: str) -> None:
        if not self.opened:  # a resumed run, its checkpoint restored: it trains on (or ends) from here
            remove_stale_uploads(client, run_id)
            client.update_run(run_id, status="RUNNING")
        self.opened = True

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        client, run_id = _mlflow(trainer)
        if run_id is None:
            return
        self._open(client, run_id)
        if hasattr(trainer.logger, "start_system_metrics"):  # a resumed run's samples begin once it is reopened
            trainer.logger.start_system_metrics()
        client.set_tag(run_id, COMPLETED, "false")
        client.set_tag(run_id, MAX_STEPS, str(trainer.max_steps))

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint[TARGET] = int(trainer.max_steps)

    def end(self, trainer: L.Trainer, error: BaseException | None = None, signal_name: str | None = None) -> str | None:
        """Tag the last step and set the final status: FINISHED (``max_steps`` reached, no error), KILLED (stopped
        early or by a signal) or FAILED (an error). Nothing for a resumed run that never started to train.
        Returns the status set."""
        client, run_id = _mlflow(trainer)
        if run_id is not None and error is None:  # the restore worked, even where no step was left to train
            self._open(client, run_id)
        if run_id is None or not self.opened:
            return None
        done = reached_max_steps(trainer)
        if error is None and done:
            status = "FINISHED"
        elif error is None or signal_name or stopped_by_signal(error):
            status = "KILLED"
        else:
            status = "FAILED"
        try:
            client.set_tag(run_id, LAST_STEP, str(trainer.global_step))
            client.set_tag(run_id, MAX_STEPS, str(trainer.max_steps))
            client.set_tag(run_id, COMPLETED, str(done).lower())
            client.set_terminated(run_id, status)
        except Exception as e:  # the store went away: the run's error (if any) is what the user must see
            print(f"lit_nash fit: could not mark MLflow run {run_id} {status} ({type(e).__name__}: {e})", file=sys.stderr)
            return None
        return status


@contextmanager
def settled(trainer: L.Trainer, status: RunStatus, stop: Any = None) -> Iterator[None]:
    """Around ``trainer.fit`` and the upload of the run's files: ``status.end`` with what happened. An error
    after a stop signal (a closed terminal, a failed upload) still stops the command as that signal does (exit
    128 + the signal, with the error's line), so a sweep never goes on to its next job."""
    signal_name = lambda: getattr(stop, "signal_name", None)  # noqa: E731 - read when the block ends
    try:
        yield
    except BaseException as e:
        status.end(trainer, e, signal_name())
        if signal_name() and isinstance(e, Exception):
            print(f"lit_nash fit: after {signal_name()}: {type(e).__name__}: {e}", file=sys.stderr)
            raise SystemExit(128 + int(getattr(signal, signal_name()))) from e
        raise
    status.end(trainer, None, signal_name())
