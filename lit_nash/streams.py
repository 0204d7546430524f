"""The terminal streams of a command, safe when their reader is gone.

``python -m lit_nash fit -m ... 2>&1 | tee log`` is a common way to keep a log, and Ctrl+C there stops ``tee``
too: every later write to stdout or stderr raises ``BrokenPipeError``. A run that was stopping cleanly (its
checkpoint written, its MLflow run to mark) would then die on its own "stopped" line, and a sweep would take
that for a failed job and go on with the next one. So a command writes through ``PipeSafe``: the first write
that finds the pipe closed points the stream's file descriptor at ``/dev/null`` (what the Python
documentation advises for ``SIGPIPE``; Python's own flush at exit then succeeds too), and what follows is
dropped. The run's log file and its MLflow run keep everything.
"""

from __future__ import annotations

import os
import sys
from typing import Any


class PipeSafe:
    """A text stream whose writes never raise ``BrokenPipeError``: once its reader is gone, it writes nowhere."""

    def __init__(self, stream: Any):
        self._stream = stream
        self.closed_pipe = False

    def _gone(self) -> None:
        self.closed_pipe = True
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):  # a stream without a file descriptor: dropping is enough
            pass

    def write(self, text: str) -> int:
        if not self.closed_pipe:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._gone()
        return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if not self.closed_pipe:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._gone()

    def __getattr__(self, name: str) -> Any:  # fileno, isatty, encoding, buffer, ...
        return getattr(self._stream, name)


def protect_terminal() -> None:
    """``sys.stdout`` and ``sys.stderr`` through ``PipeSafe`` (once per process), before anything keeps a
    reference to them (logging handlers, progress bars)."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, PipeSafe):
            setattr(sys, name, PipeSafe(stream))
