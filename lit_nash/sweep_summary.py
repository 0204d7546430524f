"""The end of a ``fit -m`` sweep on the terminal: one line per job (its number, the overrides that set it apart,
its final main metric) and the best job. A Hydra callback (``conf/fit.yaml``: ``hydra.callbacks``) that reads
what the jobs left in the sweep folder: each job's ``.hydra/overrides.yaml`` and the summary line its ``fit.log``
ends with. So it works for every launcher, parallel ones (joblib, submitit) included, whose jobs run in other
processes. The main metric is what ``fit`` returns to a sweeper: ``game/duality_gap`` on a game, else
``train/loss``; the best job is the one with the lowest."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

MAIN_METRICS = ("game/duality_gap", "train/loss")  # fit's objective, in the order fit picks it


def job_result(folder: Path, job_name: str = "fit") -> tuple[list[str], str | None, float | None]:
    """A job folder's overrides, its main metric's name and its value (None and None without a summary line:
    the job failed or stopped before the end)."""
    import yaml

    overrides_file = folder / ".hydra" / "overrides.yaml"
    overrides = [str(o) for o in yaml.safe_load(overrides_file.read_text()) or []] if overrides_file.is_file() else []
    log = folder / f"{job_name}.log"
    prefix = f"lit_nash {job_name}:"  # the summary line, after the log format's time and logger name
    lines = [line[line.index(prefix):] for line in log.read_text().splitlines() if prefix in line] if log.is_file() else []
    for metric in MAIN_METRICS:
        found = re.search(rf"(?:^| ){re.escape(metric)}=(\S+)", lines[-1]) if lines else None
        if found:
            return overrides, metric, float(found.group(1))
    return overrides, None, None


def summary_lines(sweep_dir: Path, job_name: str = "fit") -> list[str]:
    """The sweep's summary: ``sweep: job <k> <overrides>: <metric>=<value>`` per job, then the best job."""
    jobs = sorted((int(p.name), p) for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()) if sweep_dir.is_dir() else []
    if not jobs:
        return []
    results = {num: job_result(folder, job_name) for num, folder in jobs}
    shared = set.intersection(*(set(r[0]) for r in results.values()))
    lines = [f"lit_nash sweep: {len(jobs)} jobs in {sweep_dir}"]
    for num, (overrides, metric, value) in results.items():
        apart = " ".join(o for o in overrides if o not in shared) or " ".join(overrides) or "(no overrides)"
        lines.append(f"  job {num}  {apart}: " + (f"{metric}={value:.3g}" if metric else "no result (failed or stopped)"))
    done = {num: r for num, r in results.items() if r[1] is not None}
    if done:
        metrics = {r[1] for r in done.values()}
        if len(metrics) == 1:
            best = min(done, key=lambda num: done[num][2])
            lines.append(f"  best: job {best} ({done[best][1]}={done[best][2]:.3g}, the lowest of {len(done)})")
        else:
            lines.append(f"  best: none (the jobs' main metrics differ: {sorted(metrics)})")
    return lines


class SweepSummary(Callback):
    """Prints ``summary_lines`` of the sweep folder when a multirun ends."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            sweep_dir = Path(str(config.hydra.sweep.dir))
            job_name = str(config.hydra.job.name or "fit")
        except Exception:  # an unresolvable folder: no summary rather than a failed sweep
            return
        if not sweep_dir.is_absolute():
            sweep_dir = Path(str(config.hydra.runtime.cwd)) / sweep_dir
        lines = summary_lines(sweep_dir, job_name)
        if lines:
            print("\n".join(lines), flush=True)
