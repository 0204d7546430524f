"""Continue a stopped sweep as a whole: ``python -m lit_nash fit -m resume=<sweep folder>``.

A sweep stopped by Ctrl+C or SIGTERM (or killed) leaves its folder: ``multirun.yaml`` (the sweep's command, which
Hydra writes when it starts) and one numbered folder per job that began, each with its checkpoint. Continuing
reruns the same command into the same folder (``continued_sweep_args``, before Hydra reads the command line), so
every job gets its own folder back, and then each job (``continued_job``):
- whose checkpoint reached the run's last step is kept as it is: nothing is trained, its MLflow run is untouched;
- whose checkpoint stopped earlier is resumed from it, into its own MLflow run (exactly, as ``resume=`` does);
- that never wrote a checkpoint starts anew.
Overrides given with the ``resume=`` are added to the sweep's own (those of the same key replaced), e.g.
``trainer.max_steps=12000`` to lengthen every job.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SWEEP_FILE = "multirun.yaml"
NOT_REPEATED = ("hydra.mode=", "hydra.sweep.dir=", "resume=")  # overrides of the stopped sweep not given again


def _key(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0]


def sweep_folder(value: str) -> Path | None:
    """The sweep folder a ``resume=`` value names (one with Hydra's ``multirun.yaml``), or None."""
    folder = Path(value).expanduser()
    return folder.resolve() if (folder / SWEEP_FILE).is_file() else None


def continued_sweep_args(args: list[str]) -> list[str]:
    """``-m resume=<sweep folder> [overrides]`` → the stopped sweep's own command line, into its own folder, with
    these overrides added; without ``-m``, one line saying how to write it; any other command line is returned
    as it is."""
    resumes = [a for a in args if a.startswith("resume=")]
    folder = sweep_folder(resumes[-1][len("resume="):]) if resumes else None
    if folder is None:
        return args
    if "-m" not in args and "--multirun" not in args:
        raise SystemExit(f"lit_nash fit: {resumes[-1]} names a sweep's folder, which holds several runs: continue the "
                         f"sweep as a whole with python -m lit_nash fit -m resume={folder}, or one of its jobs with "
                         f"resume={folder}/<job number>")
    from omegaconf import OmegaConf

    stored = OmegaConf.load(folder / SWEEP_FILE).hydra.overrides
    extra = [a for a in args if not a.startswith("resume=") and a not in ("-m", "--multirun")]
    mine = {_key(a) for a in extra}
    before = [str(o) for o in [*stored.hydra, *stored.task]
              if not str(o).startswith(NOT_REPEATED) and _key(str(o)) not in mine]
    return ["-m", *before, *extra, f"hydra.sweep.dir={folder}", f"resume={folder}"]


@dataclass
class Job:
    """What a job of a continued sweep does: resume from ``checkpoint``, start anew (None), or nothing (``kept``)."""

    checkpoint: Path | None
    kept: bool = False


def continued_job(cfg: Any) -> Job | None:
    """For a job of ``fit -m resume=<this sweep's folder>``: its own checkpoint and what to do with it (``Job``);
    None for any other run (a ``resume=`` of one run is fit's own)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    hydra = HydraConfig.get()
    folder = sweep_folder(str(cfg.resume))
    if folder is None or folder != (Path(hydra.runtime.cwd) / hydra.sweep.dir).resolve():
        return None
    import torch

    from lit_nash.checkpoint_integrity import check_resumable
    from lit_nash.checkpointing import LAST, checkpoint_file, restore_interrupted_swap
    from lit_nash.run_status import TARGET
    from lit_nash.tracking import CONFIG_KEY, RUN_KEY

    path = Path(str(cfg.checkpoint.dir)) / LAST
    restore_interrupted_swap(path)
    if not path.exists():
        print(f"lit_nash fit: job {hydra.job.num} wrote no checkpoint before the sweep stopped; it starts anew",
              file=sys.stderr)
        return Job(None)
    check_resumable(path, str(cfg.resume))
    saved = torch.load(checkpoint_file(path), map_location="cpu", weights_only=True, mmap=True)
    stored_steps = ((saved.get(CONFIG_KEY) or {}).get("trainer") or {}).get("max_steps")
    target = saved.get(TARGET, stored_steps) if cfg.trainer.max_steps == stored_steps else cfg.trainer.max_steps
    step, run_id = int(saved.get("global_step", 0)), (saved.get(RUN_KEY) or {}).get("run_id")
    if target is not None and step >= int(target):
        print(f"lit_nash fit: job {hydra.job.num} finished before the sweep stopped (step {step} of {target}"
              + (f", MLflow run {run_id}" if run_id else "") + "): kept as it is", file=sys.stderr)
        return Job(path, kept=True)
    return Job(path)


def continue_hint(target: Any) -> str:
    """How to continue a stopped run: the run alone, or, in a sweep, the whole sweep."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        hydra = HydraConfig.get()
        folder = (Path(hydra.runtime.cwd) / hydra.sweep.dir).resolve()
        return (f"The sweep stopped here. Continue it as a whole (finished jobs are kept, this one resumes, the rest "
                f"start) with: python -m lit_nash fit -m resume={folder}")
    return f"Continue with: python -m lit_nash fit resume={target}"
