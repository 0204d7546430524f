"""``python -m lit_nash compare``: algorithms side by side, from the runs in an MLflow store.

The finished runs of one experiment (optionally narrowed by an MLflow search filter) are grouped by
``group_by``: a run tag, ``algo`` by default, or a list of keys, each a tag (``algo`` or ``tags.algo``) or a
logged config value (``params.algo.tau``: ``fit`` logs its whole config, flattened, as MLflow params). The
runs of a group are its seeds (their ``seed`` tag). A group's label is its first key's value followed by
``name=value`` for the others (``egpo tau=0.1 eta=1``; name = the key's last part); a key a run lacks is
left out of its label, and a run that lacks every key is left out. Groups are sorted by their values,
numbers as numbers. For each metric of ``conf/compare.yaml`` the command writes

* a table, one row per group: the number of seeds and the metric's final value (the run's latest step) as
  mean ± std over seeds (std with ddof=1, 0 for a single seed); printed, and saved as ``table.md`` and
  ``table.csv`` (a column per group key, the label too for several keys or tasks, and numeric ``<metric>_mean`` /
  ``<metric>_std`` columns);
* ``curve_<metric>.png``: the metric against the step, one line per group on its own step grid (the mean
  over seeds on the steps its seeds logged, each seed interpolated between its own steps where they
  differ: ``lit_nash.plots.group_grid``) with a band from the lowest to the highest seed; a log y-axis for
  the metrics named in ``log_scale``, with values clipped at 1e-16 (a gap of 0 or -1e-17 is round-off at the
  equilibrium), and for any metric whose values are positive and span more than two decades.

The runs of a row are distinct seeds: a rerun of a seed replaces the earlier run, and compare says so. Runs of
different tasks (their game or prompt dataset, rollout mode or ``trainer.max_steps``) are never averaged
together: when an experiment holds several, every group is split by task and its label names the task
(``mpo [comal_cycle, exact, 2000 steps]``). A run that lacks a metric is left out of that metric only. When the runs logged none of the configured
metrics (the defaults are a game's; text runs have no game), every ``train/*`` and ``eval/*`` metric they
logged is compared instead, and the command says which.
"""

from __future__ import annotations

import csv
import statistics
from pathlib import Path

import hydra
from omegaconf import DictConfig

from lit_nash.plots import plot_curves, plot_win_rates, sample_size

# MLflow would create an empty store at a sqlite path without a file; say there is none instead
NO_STORE = ("lit_nash compare: no MLflow store at tracking_uri={uri} (no file {db}); "
            "run `python -m lit_nash fit` here first, or point tracking_uri at the store")


@hydra.main(version_base="1.3", config_path="pkg://lit_nash.conf", config_name="compare")
def main(cfg: DictConfig) -> None:
    compare(cfg)


def group_keys(group_by) -> list[str]:
    """``group_by`` as a list of keys: a single string is one key."""
    keys = [group_by] if isinstance(group_by, str) else [str(k) for k in group_by]
    if not keys or any(not k for k in keys):
        raise SystemExit(f"lit_nash compare: group_by must name at least one tag or params.<key>; got {group_by!r}")
    return keys


def short_names(keys: list[str]) -> list[str]:
    """Each key's name in labels and headers: its last dotted part (``params.algo.tau`` → ``tau``), or the
    whole key without ``params.``/``tags.`` where two keys would share the last part."""
    bare = [k.split(".", 1)[1] if k.startswith(("params.", "tags.")) else k for k in keys]
    last = [b.rsplit(".", 1)[-1] for b in bare]
    return [l if last.count(l) == 1 else b for b, l in zip(bare, last)]


def header(keys: list[str]) -> str:
    """The group column's title: the key itself for one key (``algo``), the short names for several."""
    return keys[0] if len(keys) == 1 else ", ".join(short_names(keys))


def run_value(run, key: str) -> str | None:
    """A run's value of a group key: ``params.<name>`` a logged param, ``tags.<name>`` or ``<name>`` a tag."""
    if key.startswith("params."):
        return run.data.params.get(key[len("params."):])
    return run.data.tags.get(key[len("tags."):] if key.startswith("tags.") else key)


def label(values: tuple[str | None, ...], names: list[str]) -> str:
    """``("egpo", "0.1", "1")`` → ``egpo tau=0.1 eta=1``: the first key bare, missing values left out."""
    parts = [v if i == 0 else f"{n}={v}" for i, (v, n) in enumerate(zip(values, names)) if v is not None]
    return " ".join(parts)


def _natural(value: str | None):
    """Sort key of one group value: missing first, then numbers by value, then text."""
    if value is None:
        return (0, 0.0, "")
    try:
        return (1, float(value), value)
    except ValueError:
        return (2, 0.0, value)


def compare(cfg: DictConfig) -> dict[str, Path]:
    """Write the table and the plots; returns what was written, by name."""
    from lit_nash.tracking import check_store

    check_store(str(cfg.tracking_uri), "tracking_uri", "compare")  # another application's database stays untouched
    keys = group_keys(cfg.group_by)
    groups = load_runs(str(cfg.tracking_uri), str(cfg.experiment), cfg.filter, keys, list(cfg.metrics))
    logged = {m for runs in groups.values() for run in runs for m in run["history"]}
    metrics = [m for m in cfg.metrics if m in logged] or sorted(logged)  # load_runs' fallback: train/*, eval/*
    if not metrics:
        raise SystemExit(f"lit_nash compare: none of the runs logged any of metrics={list(cfg.metrics)}, "
                         "nor any train/* or eval/* metric")
    out = Path(str(cfg.out))
    out.mkdir(parents=True, exist_ok=True)

    rows = summarize(groups, metrics)
    written = {"table.csv": write_csv(rows, metrics, keys, out / "table.csv")}
    markdown = to_markdown(rows, metrics, header(keys))
    (out / "table.md").write_text(markdown + "\n")
    written["table.md"] = out / "table.md"
    for metric in metrics:
        log = any(s in metric for s in (cfg.log_scale or []))
        path = out / f"curve_{metric.replace('/', '_')}.png"
        plot_curves(groups, metric, header(keys), log, path, title=f"{metric} ({cfg.experiment})")
        written[path.name] = path
    if cfg.eval_experiment:
        heatmap = plot_latest_evaluation(str(cfg.tracking_uri), str(cfg.eval_experiment), str(cfg.experiment), out)
        if heatmap is not None:
            written[heatmap.name] = heatmap

    where = f"experiment {cfg.experiment!r}" + (f" with filter {cfg.filter!r}" if cfg.filter else "")
    total = sum(len(runs) for runs in groups.values())
    print(f"lit_nash compare: {total} finished runs of {where}, grouped by {', '.join(keys)}\n")
    print(markdown)
    print(f"\nwrote to {out}:")
    for name in written:
        print(f"  {name}")
    return written


def load_runs(tracking_uri: str, experiment: str, filter_string: str | None, group_by: str | list[str],
              metrics: list[str]) -> dict[str, list[dict]]:
    """``{label: [{"seed": str, "values": (value per key), "history": {metric: [(step, value), ...] sorted by
    step}}, ...]}``, the finished runs of ``experiment`` that match ``filter_string``, grouped by their values
    of the ``group_by`` keys (see the module docstring), sorted by those values."""
    keys = group_keys(group_by)
    names = short_names(keys)
    from lit_nash import tracking

    client = tracking.client(tracking_uri, missing=NO_STORE)
    runs = tracking.finished_runs(client, experiment, filter_string, "compare")
    if not runs:
        raise SystemExit(f"lit_nash compare: no finished runs in experiment {experiment!r} of {tracking_uri}"
                         f" with filter={filter_string!r}; the experiments there are {tracking.experiment_names(client)}")

    logged = sorted({m for run in runs for m in run.data.metrics})
    if not set(metrics) & set(logged):  # e.g. text runs and the default game metrics: compare what they logged
        fallback = [m for m in logged if m.startswith(("train/", "eval/"))]
        if fallback:
            print(f"lit_nash compare: the runs logged none of metrics={list(metrics)}; comparing the train/* and "
                  f"eval/* metrics they logged instead: {', '.join(fallback)}")
            metrics = fallback

    tasks = {task_identity(run) for run in runs}
    if len(tasks) > 1:  # runs of different games, datasets, rollout modes or lengths are never seeds of one row
        print(f"lit_nash compare: the runs are of {len(tasks)} different tasks ("
              + "; ".join(describe_task(t) for t in sorted(tasks, key=lambda t: tuple(_natural(v) for v in t)))
              + "): each group is split by task")
    groups: dict[tuple, dict[str, dict]] = {}
    untagged = repeated = 0
    for run in sorted(runs, key=lambda r: r.info.start_time or 0):
        values = tuple(run_value(run, key) for key in keys)
        if all(v is None for v in values):
            untagged += 1
            continue
        history = {}
        for metric in metrics:
            points = tracking.metric_history(client, run.info.run_id, metric)
            if points:
                history[metric] = points
        seed = run.data.tags.get("seed", run.info.run_id)  # a run without a seed tag is its own seed
        group = groups.setdefault(values + ((task_identity(run),) if len(tasks) > 1 else ()), {})
        repeated += seed in group
        group[seed] = {"seed": seed, "values": values, "history": history}  # a rerun of a seed replaces it
    what = f"a {keys[0]!r} tag" if len(keys) == 1 and "." not in keys[0] else f"any of group_by={keys}"
    if untagged:
        print(f"lit_nash compare: {untagged} run(s) without {what} left out")
    if repeated:
        print(f"lit_nash compare: {repeated} run(s) repeat a seed of their group; each seed counts once, its "
              "latest run (filter the runs, e.g. by tags.sweep, to choose others)")
    if not groups:
        raise SystemExit(f"lit_nash compare: no run of experiment {experiment!r} has {what} (a key is a tag "
                         "name, tags.<name>, or params.<config key> such as params.algo.tau)")
    labelled: dict[str, list[dict]] = {}
    for values, group in sorted(groups.items(), key=lambda item: tuple(_natural(v) for v in item[0][: len(keys)])
                                + tuple(_natural(v) for v in (item[0][-1] if len(tasks) > 1 else ()))):
        name = label(values[: len(keys)], names) + (f" [{describe_task(values[-1])}]" if len(tasks) > 1 else "")
        labelled.setdefault(name, []).extend(group.values())
    return labelled


def task_identity(run) -> tuple[str | None, str | None, str | None]:
    """What a run is a run of: its game or prompt dataset, its rollout mode and its length in optimizer steps.
    Runs that differ in any are not seeds of one experiment."""
    tags, params = run.data.tags, run.data.params
    return (tags.get("game") or tags.get("data"), tags.get("rollout") or params.get("rollout.mode"),
            params.get("trainer.max_steps"))


def describe_task(task: tuple[str | None, str | None, str | None]) -> str:
    what, mode, steps = task
    return ", ".join([what or "?", mode or "?", f"{steps} steps" if steps else "? steps"])


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single seed)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(groups: dict[str, list[dict]], metrics: list[str]) -> list[dict]:
    """One row per group: its seeds, and per metric (mean, std, n) of the runs' final values."""
    rows = []
    for name, runs in groups.items():
        row = {"group": name, "values": runs[0].get("values", (name,)),
               "seeds": sorted({r["seed"] for r in runs}, key=_seed_order), "n": len(runs)}
        for metric in metrics:
            finals = [r["history"][metric][-1][1] for r in runs if metric in r["history"]]
            row[metric] = (*mean_std(finals), len(finals)) if finals else None
        rows.append(row)
    return rows


def _seed_order(seed: str):
    return (0, int(seed), "") if seed.lstrip("-").isdigit() else (1, 0, seed)


def write_csv(rows: list[dict], metrics: list[str], keys: list[str], path: Path) -> Path:
    """One row per group: its label (for several keys), each key's value (empty where missing), the seeds
    and per metric ``_mean``, ``_std``, ``_n``."""
    several = len(keys) > 1 or any(row["group"] != label(row["values"], keys) for row in rows)  # split by task
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*(["group"] if several else []), *keys, "n_seeds", "seeds",
                         *(f"{m}_{s}" for m in metrics for s in ("mean", "std", "n"))])
        for row in rows:
            cells = []
            for metric in metrics:
                cells += list(row[metric]) if row[metric] is not None else ["", "", 0]
            values = ["" if v is None else v for v in row["values"]]
            writer.writerow([*([row["group"]] if several else []), *values, row["n"], " ".join(row["seeds"]), *cells])
    return path


def to_markdown(rows: list[dict], metrics: list[str], title: str) -> str:
    def cell(value, n_runs):
        if value is None:
            return "—"
        mean, std, n = value
        return f"{mean:.4g} ± {std:.2g}" + (f" (n={n})" if n != n_runs else "")

    lines = [f"| {title} | seeds | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 2) + "|"]
    for row in rows:
        lines.append(f"| {row['group']} | {row['n']} | " + " | ".join(cell(row[m], row["n"]) for m in metrics) + " |")
    return "\n".join(lines)


def plot_latest_evaluation(tracking_uri: str, eval_experiment: str, experiment: str, out: Path) -> Path | None:
    """``win_rate_matrix.png``: the heatmap of the latest finished ``eval`` of this experiment's runs (an eval
    run tagged ``source_experiment``), redrawn from its ``win_rate_matrix.json``; None if there is none."""
    import json

    from lit_nash import tracking

    client = tracking.client(tracking_uri)
    run_id = tracking.latest_eval_run(client, eval_experiment, experiment)
    if run_id is None:
        return None
    r = json.loads(tracking.download_artifact(client, run_id, "win_rate_matrix.json"))
    path = out / "win_rate_matrix.png"
    plot_win_rates(r["policies"], r["win_rate"], r["win_rate_ci95"], path,
                   f"eval run {run_id[:8]}: {sample_size(r['prompts'], r['samples'])}, ± the 95% half-width",
                   r.get("exact_win_rate"))
    return path
