"""``python -m lit_nash compare``: algorithms side by side, from the runs in an MLflow store.

The finished runs of one experiment (optionally narrowed by an MLflow search filter) are grouped by a tag,
``algo`` by default; the runs of a group are its seeds (their ``seed`` tag). For each metric of
``conf/compare.yaml`` the command writes

* a table, one row per group: the number of seeds and the metric's final value (the run's latest step) as
  mean ± std over seeds (std with ddof=1, 0 for a single seed); printed, and saved as ``table.md`` and
  ``table.csv`` (numeric ``<metric>_mean`` / ``<metric>_std`` columns);
* ``curve_<metric>.png``: the metric against the step, one line per group (the mean over seeds on the steps
  all its seeds logged) with a band from the lowest to the highest seed; a log y-axis for the metrics named
  in ``log_scale``, with values clipped at 1e-16 (a gap of 0 or -1e-17 is round-off at the equilibrium).

A run that lacks a metric is left out of that metric only.
"""

from __future__ import annotations

import csv
import statistics
from pathlib import Path

import hydra
from omegaconf import DictConfig

LOG_FLOOR = 1e-16  # non-positive values are clipped here on a log axis


@hydra.main(version_base="1.3", config_path="pkg://lit_nash.conf", config_name="compare")
def main(cfg: DictConfig) -> None:
    compare(cfg)


def compare(cfg: DictConfig) -> dict[str, Path]:
    """Write the table and the plots; returns what was written, by name."""
    groups = load_runs(str(cfg.tracking_uri), str(cfg.experiment), cfg.filter, str(cfg.group_by), list(cfg.metrics))
    metrics = [m for m in cfg.metrics if any(m in run["history"] for runs in groups.values() for run in runs)]
    if not metrics:
        raise SystemExit(f"lit_nash compare: none of the runs logged any of metrics={list(cfg.metrics)}")
    out = Path(str(cfg.out))
    out.mkdir(parents=True, exist_ok=True)

    rows = summarize(groups, metrics)
    written = {"table.csv": write_csv(rows, metrics, str(cfg.group_by), out / "table.csv")}
    markdown = to_markdown(rows, metrics, str(cfg.group_by))
    (out / "table.md").write_text(markdown + "\n")
    written["table.md"] = out / "table.md"
    for metric in metrics:
        log = any(s in metric for s in (cfg.log_scale or []))
        path = out / f"curve_{metric.replace('/', '_')}.png"
        plot_curves(groups, metric, str(cfg.group_by), log, path, title=f"{metric} ({cfg.experiment})")
        written[path.name] = path

    where = f"experiment {cfg.experiment!r}" + (f" with filter {cfg.filter!r}" if cfg.filter else "")
    total = sum(len(runs) for runs in groups.values())
    print(f"lit_nash compare: {total} finished runs of {where}, grouped by {cfg.group_by}\n")
    print(markdown)
    print(f"\nwrote to {out}:")
    for name in written:
        print(f"  {name}")
    return written


def load_runs(tracking_uri: str, experiment: str, filter_string: str | None, group_by: str,
              metrics: list[str]) -> dict[str, list[dict]]:
    """``{group: [{"seed": str, "history": {metric: [(step, value), ...] sorted by step}}, ...]}``, the
    finished runs of ``experiment`` that match ``filter_string``, grouped by their ``group_by`` tag."""
    from mlflow import MlflowClient

    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri[len("sqlite:///"):])
        if not db.is_file():  # MLflow would create an empty store there; say there is none instead
            raise SystemExit(f"lit_nash compare: no MLflow store at tracking_uri={tracking_uri} (no file {db}); "
                             "run `python -m lit_nash fit` here first, or point tracking_uri at the store")
    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    existing = sorted(e.name for e in client.search_experiments())
    if found is None:
        raise SystemExit(f"lit_nash compare: no experiment {experiment!r} in {tracking_uri}; "
                         f"the experiments there are {existing}")

    runs, token = [], None
    while True:
        page = client.search_runs([found.experiment_id], filter_string=filter_string or "", page_token=token)
        runs += [r for r in page if r.info.status == "FINISHED"]
        token = page.token
        if not token:
            break
    if not runs:
        raise SystemExit(f"lit_nash compare: no finished runs in experiment {experiment!r} of {tracking_uri}"
                         f" with filter={filter_string!r}; the experiments there are {existing}")

    groups: dict[str, list[dict]] = {}
    untagged = 0
    for run in sorted(runs, key=lambda r: r.info.start_time or 0):
        name = run.data.tags.get(group_by)
        if name is None:
            untagged += 1
            continue
        history = {}
        for metric in metrics:
            points = client.get_metric_history(run.info.run_id, metric)
            if points:
                last = {}
                for p in sorted(points, key=lambda p: (p.step, p.timestamp)):
                    last[p.step] = p.value  # a step logged twice keeps its latest value
                history[metric] = sorted(last.items())
        groups.setdefault(name, []).append({"seed": run.data.tags.get("seed", "?"), "history": history})
    if untagged:
        print(f"lit_nash compare: {untagged} run(s) without a {group_by!r} tag left out")
    if not groups:
        raise SystemExit(f"lit_nash compare: no run of experiment {experiment!r} has a tag {group_by!r}")
    return dict(sorted(groups.items()))


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single seed)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(groups: dict[str, list[dict]], metrics: list[str]) -> list[dict]:
    """One row per group: its seeds, and per metric (mean, std, n) of the runs' final values."""
    rows = []
    for name, runs in groups.items():
        row = {"group": name, "seeds": sorted({r["seed"] for r in runs}, key=_seed_order), "n": len(runs)}
        for metric in metrics:
            finals = [r["history"][metric][-1][1] for r in runs if metric in r["history"]]
            row[metric] = (*mean_std(finals), len(finals)) if finals else None
        rows.append(row)
    return rows


def _seed_order(seed: str):
    return (0, int(seed), "") if seed.lstrip("-").isdigit() else (1, 0, seed)


def write_csv(rows: list[dict], metrics: list[str], group_by: str, path: Path) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([group_by, "n_seeds", "seeds", *(f"{m}_{s}" for m in metrics for s in ("mean", "std", "n"))])
        for row in rows:
            cells = []
            for metric in metrics:
                cells += list(row[metric]) if row[metric] is not None else ["", "", 0]
            writer.writerow([row["group"], row["n"], " ".join(row["seeds"]), *cells])
    return path


def to_markdown(rows: list[dict], metrics: list[str], group_by: str) -> str:
    def cell(value, n_runs):
        if value is None:
            return "—"
        mean, std, n = value
        return f"{mean:.4g} ± {std:.2g}" + (f" (n={n})" if n != n_runs else "")

    lines = [f"| {group_by} | seeds | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 2) + "|"]
    for row in rows:
        lines.append(f"| {row['group']} | {row['n']} | " + " | ".join(cell(row[m], row["n"]) for m in metrics) + " |")
    return "\n".join(lines)


def plot_curves(groups: dict[str, list[dict]], metric: str, group_by: str, log: bool, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for name, runs in groups.items():
        histories = [dict(r["history"][metric]) for r in runs if metric in r["history"]]
        if not histories:
            continue
        steps = sorted(set.intersection(*(set(h) for h in histories)))  # the steps every seed logged
        if not steps:
            continue
        values = np.array([[h[s] for s in steps] for h in histories], dtype=float)
        if log:
            values = np.clip(values, LOG_FLOOR, None)
        mean = values.mean(axis=0)
        (line,) = ax.plot(steps, mean, label=f"{name} (n={len(histories)})")
        if len(histories) > 1:
            ax.fill_between(steps, values.min(axis=0), values.max(axis=0), color=line.get_color(), alpha=0.2, linewidth=0)
    if log:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel(metric + (" (log scale)" if log else ""))
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(title=f"{group_by}: mean over seeds, band min..max", fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
