"""Lightning's progress bar, made to show what a run is doing.

* On a run bounded by ``trainer.max_steps`` (every lit_nash run: no epochs) it counts optimizer steps out of
  max_steps, where Lightning would show "Epoch 0/-2" and the batches of the epoch. One training step is one
  optimizer step.
* It names the phase of the step in progress (``Steps · generate``): generate, judge (the preference model),
  score (snapshot log-probs), update (the loss's forward with grad, backward and optimizer step), eval (the
  periodic evaluation, e.g. ``eval › generate``) and checkpoint. The phases come from the profiler actions the
  rollout service and Lightning already open (``PhaseProfiler`` wraps the trainer's profiler).
* Within a step the display is redrawn at every phase change and once a second, so the elapsed time moves
  while a real model decodes; a step that takes longer than a second is shown as seconds per step
  (``41.3s/step``) instead of Lightning's steps per second.
  A step that took longer than a second also writes a line to the run's log file (``fit.log``): ``step 3/40 took
  41.2 s``, so a run whose terminal is a file shows its progress too.
* Metrics are shown in scientific notation (a gap of 3e-9 is not "0.000").
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar
from lightning.pytorch.profilers import Profiler
from lightning.pytorch.utilities.imports import _RICH_AVAILABLE

from lit_nash.tracking import shown

STEPS = "Steps"  # the bar's description on a max-steps run
# profiler action -> phase: the rollout service's actions (lit_nash.rollout), Lightning's own
PHASES = {"generate": "generate", "preference": "judge", "logprobs": "score", "save_checkpoint": "checkpoint"}
TICK = 1.0  # seconds between redraws inside a step
log = logging.getLogger(__name__)  # a run's log file (fit.log) gets a line per step that took longer than a second


def phase_of(action: str) -> str | None:
    if action in PHASES:
        return PHASES[action]
    if action.startswith("[Strategy]") and action.endswith(".training_step"):
        return "update"
    if action.startswith("[Callback]PeriodicEval.on_train_batch_end"):
        return "eval"
    return None


class PhaseProfiler(Profiler):
    """The trainer's profiler (``inner``: Lightning's pass-through one, or the user's ``trainer.profiler``), which
    also reports the phase a step is in to ``on_change`` (the nested phases, outermost first)."""

    def __init__(self, inner: Profiler, on_change: Callable[[list[str]], None]):
        super().__init__()
        self.inner, self.on_change, self.phases = inner, on_change, []

    def start(self, action_name: str) -> None:
        self.inner.start(action_name)
        if (phase := phase_of(action_name)) is not None:
            self.phases.append(phase)
            self.on_change(self.phases)

    def stop(self, action_name: str) -> None:
        self.inner.stop(action_name)
        if (phase := phase_of(action_name)) is not None and phase in self.phases:
            del self.phases[len(self.phases) - 1 - self.phases[::-1].index(phase)]
            self.on_change(self.phases)

    def summary(self) -> str:
        return self.inner.summary()

    def describe(self) -> None:
        self.inner.describe()

    def setup(self, stage: str, local_rank: int | None = None, log_dir: str | None = None) -> None:
        self.inner.setup(stage, local_rank, log_dir)

    def teardown(self, stage: str | None) -> None:
        self.inner.teardown(stage)


def _counts_steps(trainer) -> bool:
    """A run bounded by max_steps alone (Lightning sets max_epochs=-1 when only max_steps is given)."""
    return trainer.max_steps is not None and trainer.max_steps > 0 and trainer.max_epochs in (None, -1)


def speed(seconds: float | None) -> str:
    """Seconds per step of a slow run, steps per second of a fast one (Lightning's ``it/s``)."""
    if not seconds:
        return "-"
    return f"{seconds:.1f}s/step" if seconds > 1 else f"{1 / seconds:.2f}it/s"


class _StepBar:
    """What both bars share: steps out of max_steps, scientific metrics, the phase, the step's time."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.phase = ""
        self.step_seconds: float | None = None  # mean over the steps this process has run
        self._steps, self._since, self._last, self._ticker = 0, None, None, None

    def watch(self, profiler: Profiler) -> PhaseProfiler:
        """The trainer's profiler, reporting its phases to this bar (``fit`` sets it on the trainer)."""
        return PhaseProfiler(profiler, self.show_phase)

    def show_phase(self, phases: list[str]) -> None:
        self.phase = " › ".join(phases)
        self.describe()
        self.redraw()

    def description(self) -> str:
        return f"{STEPS} · {self.phase}" if self.phase else STEPS

    def get_metrics(self, trainer, pl_module):
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return {k.split("/")[-1]: f"{shown(k, v):.2e}" if isinstance(v, float) else v for k, v in items.items()}

    @property
    def total_train_batches(self):
        return self.trainer.max_steps if _counts_steps(self.trainer) else super().total_train_batches

    def on_train_start(self, trainer, pl_module) -> None:
        super().on_train_start(trainer, pl_module)
        self._since = self._last = time.perf_counter()
        if self.is_enabled and self._ticker is None:  # the elapsed time moves inside a long step
            stop = threading.Event()
            thread = threading.Thread(target=self._tick, args=(stop,), name="lit_nash-progress", daemon=True)
            self._ticker = (stop, thread)
            thread.start()

    def _tick(self, stop: threading.Event) -> None:
        while not stop.wait(TICK):
            self.redraw()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        if self._since is not None:
            self._steps += 1
            self.step_seconds = (now - self._since) / self._steps  # from the start of training: rollouts included
            if now - self._last > 1:
                log.info("step %d/%d took %.1f s (%s since the run started)", trainer.global_step, trainer.max_steps,
                         now - self._last, speed(self.step_seconds))
            self._last = now
        # the bar shows batch_idx + 1: on a max-steps run, the optimizer steps done (a resumed run's too)
        super().on_train_batch_end(trainer, pl_module, outputs, batch,
                                   trainer.global_step - 1 if _counts_steps(trainer) else batch_idx)

    def _stop_ticker(self) -> None:
        if self._ticker is not None:
            stop, thread = self._ticker
            stop.set()
            thread.join()
            self._ticker = None

    def on_train_end(self, trainer, pl_module) -> None:
        self._stop_ticker()
        self.phase = ""
        self.describe()
        super().on_train_end(trainer, pl_module)

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._stop_ticker()
        super().on_exception(trainer, pl_module, exception)

    def teardown(self, trainer, pl_module, stage) -> None:
        self._stop_ticker()
        super().teardown(trainer, pl_module, stage)


class RichGapBar(_StepBar, RichProgressBar):
    def _get_train_description(self, current_epoch: int) -> str:
        if _counts_steps(self.trainer):
            return self.description()
        return super()._get_train_description(current_epoch)

    def configure_columns(self, trainer) -> list:
        from lightning.pytorch.callbacks.progress.rich_progress import ProcessingSpeedColumn
        from rich.text import Text

        bar = self

        class StepSpeed(ProcessingSpeedColumn):  # rich's own speed averages 30 s and reads 0.00it/s on slow steps
            def render(self, task) -> Text:
                return Text(speed(bar.step_seconds), style=self.style)

        columns = super().configure_columns(trainer)
        return [StepSpeed(style=self.theme.processing_speed) if isinstance(c, ProcessingSpeedColumn) else c for c in columns]

    def describe(self) -> None:
        if self.progress is not None and self.train_progress_bar_id is not None and _counts_steps(self.trainer):
            self.progress.update(self.train_progress_bar_id, description=self.description())

    def redraw(self) -> None:
        if self.progress is not None and self.is_enabled:
            self.refresh()


class TQDMGapBar(_StepBar, TQDMProgressBar):
    def on_train_epoch_start(self, trainer, *args) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.describe()

    def describe(self) -> None:
        if self._train_progress_bar is not None and _counts_steps(self.trainer):
            self.train_progress_bar.set_description(self.description(), refresh=False)

    def redraw(self) -> None:
        if self._train_progress_bar is not None and self.is_enabled:
            self.train_progress_bar.refresh()


def progress_bar():
    """The bar Lightning would pick (rich when installed), with scientific metrics."""
    return RichGapBar() if _RICH_AVAILABLE else TQDMGapBar()
