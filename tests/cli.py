"""Run ``python -m lit_nash`` as a user would: a subprocess in a directory of the test's choosing."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd: Path, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lit_nash", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_many(*calls: tuple[tuple[str, ...], dict], workers: int = 2) -> list[subprocess.CompletedProcess]:
    """``run_cli(*args, **kwargs)`` for each (args, kwargs), ``workers`` at a time (each subprocess uses one
    torch thread, so two of them use a 2-core CI box fully); results in the order given."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda call: run_cli(*call[0], **call[1]), calls))


def check_refused(out: subprocess.CompletedProcess, messages: list[str], paths: dict) -> None:
    """A refused command: non-zero exit, and each message (with ``{name}`` filled from ``paths``) on stderr."""
    assert out.returncode != 0, out.stdout[-2000:]
    for message in messages:
        assert message.format(**paths) in out.stderr, out.stderr[-3000:]
