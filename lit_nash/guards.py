"""Numerical guards: a non-finite loss, gradient, log-prob or preference probability stops the run.

An online step that trains on NaN does not fail loudly by itself: the optimizer writes NaN into the
weights, every later sample is garbage, and the next checkpoint overwrites the last good one. So the
quantities a step produces are checked where they are made, before the optimizer step, and the error
names the quantity, the algorithm and the optimizer step. Lightning then marks the MLflow run failed
and writes no checkpoint (``LastCheckpoint`` never saves on an exception): the last good one stays.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator

import torch
from torch import Tensor


class NumericalError(ValueError):
    """A non-finite (or out-of-range) quantity in a training step."""


def check_finite(value: Tensor, quantity: str) -> Tensor:
    """``value`` itself if every entry is finite; else a ``NumericalError`` naming ``quantity``."""
    finite = torch.isfinite(value)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise NumericalError(f"non-finite {quantity}: {bad} of {value.numel()} values are NaN or infinite")
    return value


def check_gradients(parameters: Iterable[torch.nn.Parameter]) -> None:
    """The total gradient norm is finite (one fused norm over every gradient, then one check)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if grads:
        check_finite(torch.nn.utils.get_total_norm(grads), "gradient (total norm)")


@contextmanager
def in_step(module) -> Iterator[None]:
    """Numerical errors raised inside a training step say which algorithm and which optimizer step."""
    try:
        yield
    except NumericalError as e:
        algo = getattr(getattr(module, "algorithm", None), "name", "?")
        trainer = getattr(module, "_trainer", None)
        step = trainer.global_step + 1 if trainer is not None else "?"
        raise NumericalError(f"algo={algo}, optimizer step {step}: {e}. The run stopped before the optimizer "
                             "step; the last good checkpoint is kept") from e
