"""``python -m lit_nash <command> [hydra overrides]``: the command dispatcher.

Hydra reads only overrides, so the command word is taken off ``sys.argv`` and kept in the environment
variable ``LIT_NASH_COMMAND``: Lightning re-launches the script for extra processes with the same ``sys.argv``
(no longer starting with the command) and this process's environment, so a re-launched process (one with
``LOCAL_RANK`` set) finds its command there. The command never becomes a Hydra override, so it shows in no
``[HYDRA] #k : ...`` line of a sweep, no ``.hydra/overrides.yaml`` and no "Error executing job with
overrides" message.

Run folders (``hydra.run.dir``, ``${lit_nash_run:}``) belong to runs that train: ``fit``, ``bench`` and
``train_preference``. ``compare`` and ``eval`` write only the folder named by their ``out`` (conf/compare.yaml,
conf/eval.yaml). A run that fails before it wrote anything of its own leaves no folder (``settle_run_folder``).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import shutil
import sys
import traceback
from datetime import datetime
from pathlib import Path

from lit_nash.streams import protect_terminal

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
    "export": ("lit_nash.export", "a trained policy as a Hugging Face model folder, merged or as its LoRA adapter (conf/export.yaml)"),
}

USAGE = ("usage: python -m lit_nash <command> [hydra overrides]   (python -m lit_nash <command> --help; "
         "python -m lit_nash --version)")


def _print_commands(stream) -> None:
    print(USAGE, file=stream)
    print("\ncommands:", file=stream)
    width = max(len(name) for name in COMMANDS)
    for name, (_, about) in COMMANDS.items():
        print(f"  {name:<{width}}  {about}", file=stream)


COMMAND_ENV = "LIT_NASH_COMMAND"  # the command of this process, inherited by the processes Lightning re-launches


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


HYDRA_FILES = {".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml"}
FAILED = "FAILED"  # the marker file of a run folder whose run failed after writing into it


_started = False  # set by training_started(): the run has begun to train, its folder is a run's


def training_started() -> None:
    """Called by a command right before it trains: from here on a failure keeps the run folder, marked."""
    global _started
    _started = True


def _files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir()}


def settle_run_folder(error: BaseException) -> str | None:
    """After a command's run raised ``error``: its Hydra run folder is removed if the run had not started to
    train (``training_started``) and the folder holds nothing but what Hydra wrote at the start (``.hydra/``
    and the ``<job>.log``): a run refused at validation, or that failed while building, leaves no folder that
    looks like a run (nor the date folder and ``outputs/`` above it, where that empties them). Any other
    failed run keeps its folder (its log, checkpoints), marked by a ``FAILED`` file with the error; one
    stopped by a signal (``SystemExit`` with a number: it said how to resume) is kept as it is. Returns what
    was done: "removed", "marked" or None."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized() or (isinstance(error, SystemExit) and error.code in (None, 0)):
        return None
    hydra = HydraConfig.get()
    folder = Path(hydra.runtime.output_dir)
    if not folder.is_dir():
        return None
    import logging

    log = f"{hydra.job.name}.log"
    if not _started and _files(folder) <= HYDRA_FILES | {log}:
        root = logging.getLogger()
        for handler in list(root.handlers):  # the job's log file: closed, so nothing writes there again
            if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).parent == folder:
                handler.close()
                root.removeHandler(handler)
        shutil.rmtree(folder, ignore_errors=True)
        if folder.name == run_folder_name():  # the default outputs/<date>/<time>: the date folder and
            with contextlib.suppress(OSError):  # outputs/ too, where that empties them
                folder.parent.rmdir()
                folder.parent.parent.rmdir()
        return "removed"
    if isinstance(error, (SystemExit, KeyboardInterrupt)) and not isinstance(getattr(error, "code", ""), str):
        return None  # stopped by a signal, with a checkpoint to resume from
    reason = str(error.code) if isinstance(error, SystemExit) else f"{type(error).__name__}: {error}"
    text = "".join(traceback.format_exception(error)) if not isinstance(error, SystemExit) else ""
    (folder / FAILED).write_text(f"this run failed: {reason}\n\n{text}")
    return "marked"


REFUSALS = (ValueError, FileNotFoundError, PermissionError)  # what lit_nash raises for a bad input


def refusal(error: BaseException) -> BaseException | None:
    """The bad-input error behind ``error`` (a ``ValueError``, ``FileNotFoundError`` or ``PermissionError`` that
    lit_nash's own code raised, also inside Hydra's instantiation error), or None: a library's error, a bug."""
    if type(error).__name__ == "InstantiationException" and error.__cause__ is not None:
        error = error.__cause__
    if not isinstance(error, REFUSALS):
        return None
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    package = str(Path(__file__).parent)
    return error if tb is not None and tb.tb_frame.f_code.co_filename.startswith(package) else None


@contextlib.contextmanager
def run_folder_settled():
    """Around a training command's run (one job of a sweep): ``settle_run_folder`` if it raises. A bad input
    refused before training started (by lit_nash's own checks while the run is built) ends the command with its
    one line, not Hydra's report of a traceback (``HYDRA_FULL_ERROR=1`` keeps the traceback)."""
    global _started
    _started = False  # a sweep's jobs run one after another in one process
    try:
        yield
    except BaseException as e:
        settle_run_folder(e)
        if not _started and (bad := refusal(e)) is not None and os.environ.get("HYDRA_FULL_ERROR") != "1":
            prefix = "" if str(bad).startswith("lit_nash ") else f"lit_nash {os.environ.get(COMMAND_ENV) or 'fit'}: "
            raise SystemExit(f"{prefix}{bad}") from None
        raise
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():  # a run continued in its folder (a sweep's job) is no longer the failed one
        (Path(HydraConfig.get().runtime.output_dir) / FAILED).unlink(missing_ok=True)


TRAINING = ("fit", "bench", "train_preference")  # the commands that write into a run folder


def check_run_folder_writable(command: str, args: list[str]) -> None:
    """A training command writes its run folder (``outputs/``, or ``multirun/`` under ``-m``, where Hydra's
    ``hydra.run.dir`` / ``hydra.sweep.dir`` puts it) and, by default, its MLflow store into the working folder.
    A folder it cannot write gets one line now, not Hydra's chained tracebacks."""
    if command not in TRAINING or {"--cfg", "-c", "--info", "-i", "--hydra-help"} & set(args):
        return
    multirun = "-m" in args or "--multirun" in args
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    given = [a.split("=", 1)[1] for a in args if a.startswith(f"{key}=")]
    target = Path(given[-1] if given else ("multirun" if multirun else "outputs")).expanduser().absolute()
    existing = next(p for p in [target, *target.parents] if p.exists())
    if os.access(existing, os.W_OK | os.X_OK):
        return
    read_only = hasattr(os, "ST_RDONLY") and bool(os.statvfs(existing).f_flag & os.ST_RDONLY)
    why = "is on a read-only file system" if read_only else "is not writable (its permissions)"
    print(f"lit_nash {command}: cannot create the run folder {str(target)!r}: {str(existing)!r} {why}. Run from a "
          f"writable folder (cd <folder>), or name one with {key}=<writable folder> (and the MLflow store with "
          "logger.tracking_uri=sqlite:///<writable folder>/mlruns.db)", file=sys.stderr)
    raise SystemExit(2)


def main(argv: list[str] | None = None) -> None:
    protect_terminal()  # a closed pipe (| tee after Ctrl+C) never fails a run that is stopping cleanly
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] in (["--version"], ["-V"]):
        from lit_nash import __version__

        print(f"lit_nash {__version__}")
        raise SystemExit(0)
    if args and args[0] in COMMANDS:
        command = args.pop(0)
        os.environ[COMMAND_ENV] = command
    elif os.environ.get(COMMAND_ENV) and "LOCAL_RANK" in os.environ:
        command = os.environ[COMMAND_ENV]  # Lightning's re-launch of this script for another rank (it sets LOCAL_RANK)
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
    if "LOCAL_RANK" not in os.environ and not {"--help", "-h"} & set(args):  # Lightning's re-launch: checked already
        from lit_nash.overrides import check_dashes, check_keys

        check_dashes(command, args)  # --algo=egpo: write algo=egpo
        check_keys(command, args)  # eta=2: did you mean algo.eta=2?
        check_run_folder_writable(command, args)
    if command == "fit" and "LOCAL_RANK" not in os.environ:
        from lit_nash.sweep_resume import continued_sweep_args

        args = continued_sweep_args(args)  # -m resume=<sweep folder>: the stopped sweep's command, into its folder
    sys.argv = [sys.argv[0], *args]
    if "-m" in args or "--multirun" in args:  # this process launches a sweep: its workers name the same folder
        os.environ[SWEEP_FOLDER_ENV] = _new_folder_name()
    register_resolvers()
    run = importlib.import_module(COMMANDS[command][0]).main
    try:
        run()
    except KeyboardInterrupt:  # Ctrl+C outside training (building, between a sweep's jobs): one line, not a traceback
        print(f"lit_nash {command}: stopped by SIGINT", file=sys.stderr)
        raise SystemExit(130) from None
