"""``python -m lit_nash <command> [hydra overrides]``: the command dispatcher.

Hydra reads only overrides, so the command word is taken off ``sys.argv`` and put back as the override
``command=<name>``, right after the user's last override: Hydra's parser takes one contiguous group of
overrides, so it must join that group (``fit -m algo=a,b``, ``fit algo=a --cfg job`` and ``fit --help``
all keep working). The override keeps the command when Lightning re-launches the script for extra
processes (it re-runs ``sys.argv``), where the first argument is no longer the command.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import io
import os
import re
import sys
from datetime import datetime

COMMANDS = {
    "fit": ("lit_nash.fit", "train a policy with an NLHF algorithm (conf/fit.yaml)"),
    "train_preference": (
        "lit_nash.train_preference",
        "train a pairwise preference classifier on (prompt, a, b, label) data (conf/train_preference.yaml)",
    ),
    "eval": (
        "lit_nash.eval",
        "win rates of trained policies vs their references and each other, exact gaps on games (conf/eval.yaml)",
    ),
    "bench": ("lit_nash.bench", "time online steps of an algorithm on the shared spec; one JSON line (conf/bench.yaml)"),
    "compare": ("lit_nash.compare", "table and plots of MLflow runs: final metrics per algorithm over seeds (conf/compare.yaml)"),
}

USAGE = ("usage: python -m lit_nash <command> [hydra overrides]   (python -m lit_nash <command> --help; "
         "python -m lit_nash --version)")
# config groups Hydra's --help would list as choices that are no run's choice: their line says what they are
INTERNAL_GROUPS = {
    "sweep/sampled_play": "(not a choice of its own) each algorithm's sampled-play settings, which sweep=comal_cycle "
                          "applies one per job; narrow it: -m sweep=comal_cycle sweep/sampled_play=mpo,egpo",
}


def _print_commands(stream) -> None:
    print(USAGE, file=stream)
    print("\ncommands:", file=stream)
    width = max(len(name) for name in COMMANDS)
    for name, (_, about) in COMMANDS.items():
        print(f"  {name:<{width}}  {about}", file=stream)


def _with_override(args: list[str], override: str) -> list[str]:
    """Insert ``override`` after the last Hydra override (``key=value``, ``~key``), else at the end."""
    overrides = [i for i, a in enumerate(args) if not a.startswith("-") and ("=" in a or a.startswith("~"))]
    at = overrides[-1] + 1 if overrides else len(args)
    return [*args[:at], override, *args[at:]]


SWEEP_FOLDER_ENV = "LIT_NASH_SWEEP_FOLDER"


def _new_folder_name() -> str:
    return f"{datetime.now():%H-%M-%S-%f}-{os.getpid()}"


@functools.cache
def run_folder_name() -> str:
    """``${lit_nash_run:}``, the last part of a run or sweep folder: the time to the microsecond and the process
    id (``12-06-07-123456-4242``), so two runs started in the same second in one folder never share a folder.
    One value per process, and under ``-m`` one per sweep: a parallel launcher's worker processes (joblib,
    submitit) resolve the sweep folder again, and read the launching process's value from the environment."""
    return os.environ.get(SWEEP_FOLDER_ENV) or _new_folder_name()


def register_resolvers() -> None:
    """The OmegaConf resolvers of conf/ (before Hydra composes a config)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("lit_nash_run"):
        OmegaConf.register_new_resolver("lit_nash_run", run_folder_name)


def _help(run) -> None:
    """A command's ``--help`` (Hydra prints it), with each internal group's line explained, not listed."""
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            run()
    finally:
        text = printed.getvalue()
        for group, about in INTERNAL_GROUPS.items():
            text = re.sub(rf"^{re.escape(group)}: .*$", lambda _: f"{group}: {about}", text, flags=re.M)
        sys.stdout.write(text)


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] in (["--version"], ["-V"]):
        from lit_nash import __version__

        print(f"lit_nash {__version__}")
        raise SystemExit(0)
    relaunched = [a.split("=", 1)[1] for a in args if a.startswith("command=")]
    if args and args[0] in COMMANDS:
        command = args.pop(0)
        args = _with_override([a for a in args if not a.startswith("command=")], f"command={command}")
    elif relaunched:
        command = relaunched[-1]
    elif args and args[0] in ("-h", "--help"):
        _print_commands(sys.stdout)
        raise SystemExit(0)
    else:
        if args:
            print(f"lit_nash: unknown command {args[0]!r}\n", file=sys.stderr)
        _print_commands(sys.stderr)
        raise SystemExit(2)
    if command not in COMMANDS:
        print(f"lit_nash: unknown command {command!r}\n", file=sys.stderr)
        _print_commands(sys.stderr)
        raise SystemExit(2)
    sys.argv = [sys.argv[0], *args]
    if "-m" in args or "--multirun" in args:  # this process launches a sweep: its workers name the same folder
        os.environ[SWEEP_FOLDER_ENV] = _new_folder_name()
    register_resolvers()
    run = importlib.import_module(COMMANDS[command][0]).main
    _help(run) if "--help" in args or "-h" in args else run()
