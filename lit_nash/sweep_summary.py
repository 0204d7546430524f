"""The end of a ``fit -m`` sweep on the terminal: one line per job (its number, the overrides that set it apart,
its final main metric), the settings ranked by their mean over seeds with its 95% interval (a setting: a job's
overrides but its seed; one seed shows its count, never "± 0"), and the best setting. A Hydra callback (``conf/fit.yaml``: ``hydra.callbacks``) that reads
what the jobs left in the sweep folder: each job's ``.hydra/overrides.yaml`` and the summary line its ``fit.log``
ends with. So it works for every launcher, parallel ones (joblib, submitit) included, whose jobs run in other
processes. The main metric is what ``fit`` returns to a sweeper: ``game/duality_gap`` on a game, else
``train/loss``; the best setting is the one with the lowest mean."""

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
    """The sweep's summary: ``job <k> <overrides>: <metric>=<value>`` per job, then the settings (a job's
    overrides but its seed) ranked by their mean over seeds, with its 95% interval, and the best."""
    from lit_nash.ranking import Estimate, rank

    jobs = sorted((int(p.name), p) for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()) if sweep_dir.is_dir() else []
    if not jobs:
        return []
    results = {num: job_result(folder, job_name) for num, folder in jobs}
    shared = set.intersection(*(set(r[0]) for r in results.values()))
    lines = [f"lit_nash sweep: {len(jobs)} jobs in {sweep_dir}"]
    settings: dict[str, list[int]] = {}
    for num, (overrides, metric, value) in results.items():
        apart = " ".join(o for o in overrides if o not in shared) or " ".join(overrides) or "(no overrides)"
        lines.append(f"  job {num}  {apart}: " + (f"{metric}={value:.3g}" if metric else "no result (failed or stopped)"))
        setting = " ".join(o for o in overrides if o not in shared and not o.startswith("seed=")) or "(one setting)"
        settings.setdefault(setting, []).append(num)
    done = {num: r for num, r in results.items() if r[1] is not None}
    if not done:
        return lines
    metrics = {r[1] for r in done.values()}
    if len(metrics) > 1:
        return lines + [f"  best: none (the jobs' main metrics differ: {sorted(metrics)})"]
    metric = metrics.pop()
    estimates = {s: Estimate.over_seeds([done[n][2] for n in nums if n in done]) for s, nums in settings.items()
                 if any(n in done for n in nums)}
    ranked = rank(estimates)
    if any(e.n > 1 for e in estimates.values()) and len(ranked) > 1:
        lines.append(f"  ranked by the mean of {metric} over seeds (± the 95% half-width):")
        lines += [f"    {row['rank']}. {row['group']}: {row['estimate'].text(3)}"
                  + ("" if row["rank"] == 1 or not row["with_best"] else "  (interval overlaps the best)") for row in ranked]
    best = ranked[0]
    e = best["estimate"]
    value = f"{metric}={e.mean:.3g}, 1 seed" if e.n == 1 else f"{metric} {e.mean:.3g} ± {e.half:.2g} over {e.n} seeds"
    lines.append(f"  best: {best['group']} ({value}; the lowest mean of {len(ranked)} setting{'s' if len(ranked) > 1 else ''})")
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
