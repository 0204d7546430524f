"""``python -m lit_nash compare``: algorithms side by side, from the runs in an MLflow store.

The runs of one experiment (optionally narrowed by an MLflow search filter) are read back and grouped
(``lit_nash.run_groups``): by ``group_by`` (``algo`` by default, or a list of tags and ``params.<config key>``),
split by task, each seed once. Only complete runs enter a mean; incomplete ones (stopped, failed, running, or
FINISHED short of ``trainer.max_steps``) are listed apart with their last step. For each metric of
``conf/compare.yaml`` the command writes (``lit_nash.result_table``, ``lit_nash.plots``):

* ``table.md`` and ``table.csv``: per group, the number of seeds and the metric's final value as the mean over
  seeds ± the half-width of its 95% interval (one seed shows n=1, never "± 0"); notes on groups that are the
  same algorithm by their settings (MPO whose magnet never moves is MMD) and on incomplete runs;
* ``ranking.md`` and ``ranking.csv``: the groups ranked by the mean over seeds of ``rank_by`` (by default the
  window-mean last-iterate gap each run logs at its end, ``summary/gap_window``), with its interval, how many
  runs converged, and which groups the data cannot tell from the best;
* ``curve_<metric>.<format>`` for each of ``formats`` (PNG and PDF by default): the mean over seeds against
  the x-axis ``x`` (``step``, ``time`` or any logged metric such as ``pref/queries``), a band of ± one standard
  error (``band``), reference lines at π*_τ's gap and at ε, axis labels from ``lit_nash.glossary``, and one
  panel per group when there are more than five;
* ``win_rate_matrix.png``/``.pdf``: the latest ``eval`` of this experiment's runs, redrawn
  (``lit_nash.heatmap``).

With ``mode=benchmark`` it writes the NLHF benchmark instead (``benchmark``, ``lit_nash.benchmark_table``): per
algorithm × game × play mode, the optimizer steps, preference queries and seconds until the gap to the
algorithm's own target first stays below ε, for the last and the average iterate, and the gaps against
preference queries.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from lit_nash import glossary, result_table
from lit_nash.heatmap import plot_win_rates
from lit_nash.plots import plot_curves, sample_size
from lit_nash.run_groups import group_keys, group_of, grouped, header, load, training_runs

# MLflow would create an empty store at a sqlite path without a file; say there is none instead
NO_STORE = ("lit_nash compare: no MLflow store at tracking_uri={uri} (no file {db}); "
            "run `python -m lit_nash fit` here first, or point tracking_uri at the store")
FORMATS = ("png", "pdf", "svg")
MODES = ("metrics", "benchmark")


@hydra.main(version_base="1.3", config_path="pkg://lit_nash.conf", config_name="compare")
def main(cfg: DictConfig) -> None:
    compare(cfg)


def compare(cfg: DictConfig, quiet: bool = False) -> dict[str, Path]:
    """Write the tables and the plots; returns what was written, by name (``quiet``: print nothing)."""
    from lit_nash import tracking

    tracking.check_store(str(cfg.tracking_uri), "tracking_uri", "compare")  # another application's database stays untouched
    say = (lambda *a: None) if quiet else print
    keys, x = group_keys(cfg.group_by), str(cfg.get("x") or "step")
    formats = [str(f) for f in cfg.get("formats") or ["png"]]
    if set(formats) - set(FORMATS):
        raise SystemExit(f"lit_nash compare: formats must be among {list(FORMATS)}, got {formats}")
    client = tracking.client(str(cfg.tracking_uri), missing=NO_STORE)
    found = client.get_experiment_by_name(str(cfg.experiment))
    if found is None:
        raise SystemExit(f"lit_nash compare: no experiment {str(cfg.experiment)!r} in {client.tracking_uri}; "
                         f"the experiments there are {tracking.experiment_names(client)}")
    mlflow_runs = training_runs(tracking.all_runs(client, found.experiment_id, cfg.filter))
    mode = str(cfg.get("mode") or "metrics")
    if mode not in MODES:
        raise SystemExit(f"lit_nash compare: mode must be one of {list(MODES)}, got {mode!r}")
    if mode == "benchmark":
        return benchmark(cfg, client, mlflow_runs, formats, say)
    metrics = chosen_metrics(mlflow_runs, list(cfg.metrics), say)
    if x not in ("step", "time") and not any(x in r.data.metrics for r in mlflow_runs):
        logged = sorted({m for r in mlflow_runs for m in r.data.metrics})
        raise SystemExit(f"lit_nash compare: x={x!r}: no run logged it; x is step, time, or a logged metric: {logged}")
    runs = load(client, mlflow_runs, keys, list(dict.fromkeys([*metrics, "game/duality_gap"])), x)
    complete = [r for r in runs if r.complete]
    incomplete = [r for r in runs if not r.complete and any(v is not None for v in r.values)]
    if not complete:
        left = f" ({len(incomplete)} incomplete run(s): {', '.join(r.status for r in incomplete)})" if incomplete else ""
        raise SystemExit(f"lit_nash compare: no finished runs in experiment {cfg.experiment!r} of {cfg.tracking_uri}"
                         f" with filter={cfg.filter!r}{left}; the experiments there are {tracking.experiment_names(client)}")
    groups, notes = grouped(complete, keys)
    for note in notes:
        say(f"lit_nash compare: {note}")
    if not groups:
        what = f"a {keys[0]!r} tag" if len(keys) == 1 and "." not in keys[0] else f"any of group_by={keys}"
        raise SystemExit(f"lit_nash compare: no run of experiment {cfg.experiment!r} has {what} (a key is a tag "
                         "name, tags.<name>, or params.<config key> such as params.algo.tau)")
    metrics = [m for m in metrics if any(m in r.steps for runs in groups.values() for r in runs)]
    if not metrics:
        raise SystemExit(f"lit_nash compare: none of the runs logged any of metrics={list(cfg.metrics)}, "
                         "nor any train/* or eval/* metric")
    out = Path(str(cfg.out))
    out.mkdir(parents=True, exist_ok=True)
    written = write_tables(groups, incomplete, metrics, keys, cfg.get("rank_by"), out, len({r.task for r in runs}) > 1)
    markdown = (out / "table.md").read_text().rstrip("\n")
    for metric in metrics:
        log = any(s in metric for s in (cfg.log_scale or []))
        paths = [out / f"curve_{metric.replace('/', '_')}.{f}" for f in formats]
        curves = {name: [r.history for r in members] for name, members in groups.items()}
        plot_curves(curves, metric, header(keys), log, paths, title=f"{glossary.label(metric)}: {cfg.experiment}",
                    x=x, band=str(cfg.get("band") or "se"), references=references(groups, metric),
                    values={name: members[0].values for name, members in groups.items()})
        written.update({p.name: p for p in paths})
    if cfg.eval_experiment:
        for heatmap in plot_latest_evaluation(str(cfg.tracking_uri), str(cfg.eval_experiment), str(cfg.experiment), out):
            written[heatmap.name] = heatmap

    where = f"experiment {cfg.experiment!r}" + (f" with filter {cfg.filter!r}" if cfg.filter else "")
    say(f"lit_nash compare: {len(complete)} finished runs of {where}, grouped by {', '.join(keys)}"
        + (f"; {len(incomplete)} incomplete run(s) listed apart, in no mean" if incomplete else "") + "\n")
    say(markdown)
    if "ranking.md" in written:
        say("\n" + (out / "ranking.md").read_text().rstrip("\n"))
    say(f"\nwrote to {out}:")
    for name in written:
        say(f"  {name}")
    return written


def benchmark(cfg: DictConfig, client, mlflow_runs: list, formats: list[str], say) -> dict[str, Path]:
    """``mode=benchmark``: the NLHF benchmark's table (``benchmark.md``, ``benchmark.csv``, one row per algorithm
    and task; ``benchmark_runs.csv``, one per run) and its figure, each algorithm's gap to its own target against
    its preference queries (``benchmark_queries.<format>``), from the complete runs on a game
    (``lit_nash.benchmark_table``)."""
    from omegaconf import OmegaConf

    from lit_nash import benchmark_table as bt
    from lit_nash.algorithms import ALGORITHMS
    from lit_nash.plots import benchmark_figure, save

    runs = load(client, [r for r in mlflow_runs if r.data.tags.get("game")], ["algo"], bt.METRICS, bt.QUERIES)
    complete = [r for r in runs if r.complete]
    if not complete:
        raise SystemExit(f"lit_nash compare: mode=benchmark: no finished run on a game in experiment {cfg.experiment!r}"
                         f" with filter={cfg.filter!r} ({len(runs)} incomplete); the benchmark measures exact gaps")
    groups, notes = grouped(complete, ["algo"])
    epsilons = OmegaConf.to_container(cfg.benchmark.epsilon, resolve=True)
    rows, left_out = bt.rows(groups, epsilons, {name: a.converges_to for name, a in ALGORITHMS.items()})
    for note in notes + left_out + ([f"{len(runs) - len(complete)} incomplete run(s) left out"] if len(runs) > len(complete) else []):
        say(f"lit_nash compare: {note}")
    out = Path(str(cfg.out))
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmark.md").write_text(bt.to_markdown(rows) + "\n")
    written = {"benchmark.md": out / "benchmark.md", "benchmark.csv": bt.write_csv(rows, out / "benchmark.csv"),
               "benchmark_runs.csv": bt.write_runs_csv(rows, out / "benchmark_runs.csv")}
    paths = [out / f"benchmark_queries.{f}" for f in formats]
    save(benchmark_figure(bt.panels(rows), f"NLHF benchmark: {cfg.experiment}"), paths)
    written.update({p.name: p for p in paths})
    say(f"lit_nash compare: the NLHF benchmark of {len(complete)} finished runs of experiment {cfg.experiment!r}\n")
    say((out / "benchmark.md").read_text().rstrip("\n"))
    say(f"\nwrote to {out}:")
    for name in written:
        say(f"  {name}")
    return written


def chosen_metrics(runs: list, wanted: list[str], say) -> list[str]:
    """``wanted`` (the configured metrics), or, when the runs logged none of them (text runs and the default
    game metrics), every train/* and eval/* metric they logged, said on the terminal."""
    logged = sorted({m for run in runs for m in run.data.metrics})
    if set(wanted) & set(logged):
        return wanted
    fallback = [m for m in logged if m.startswith(("train/", "eval/"))]
    if fallback:
        say(f"lit_nash compare: the runs logged none of metrics={list(wanted)}; comparing the train/* and "
            f"eval/* metrics they logged instead: {', '.join(fallback)}")
    return fallback


def write_tables(groups, incomplete, metrics, keys, rank_by, out: Path, several_tasks: bool) -> dict[str, Path]:
    """table.md/.csv (with the notes and the incomplete runs) and ranking.md/.csv."""
    rows = result_table.summarize(groups, metrics)
    written = {"table.csv": result_table.write_csv(rows, metrics, keys, out / "table.csv")}
    parts = [result_table.to_markdown(rows, metrics, header(keys))]
    notes = result_table.identity_notes(groups)
    if notes:
        parts.append("Notes:\n\n" + "\n".join(f"- {n}" for n in notes))
    if incomplete:
        parts.append(result_table.incomplete_markdown(incomplete, lambda r: group_of(r, keys, several_tasks)))
    (out / "table.md").write_text("\n\n".join(parts) + "\n")
    written["table.md"] = out / "table.md"
    metric = result_table.rank_metric(groups, rank_by)
    if metric is not None:
        ranked = result_table.ranking(groups, metric)
        (out / "ranking.md").write_text(result_table.ranking_markdown(ranked, metric, header(keys)) + "\n")
        written["ranking.md"] = out / "ranking.md"
        written["ranking.csv"] = result_table.ranking_csv(ranked, metric, out / "ranking.csv")
    return written


def references(groups, metric: str) -> list[tuple[float, str]]:
    """Horizontal lines for a curve: π*_τ's duality gap on the original-gap curves (where every run logged the
    same ``summary/reg_ne_gap``) and ε on the gap curves (where every run had the same ``summary.epsilon``)."""
    runs = [r for members in groups.values() for r in members]
    lines = []
    if metric in ("game/duality_gap", "game/avg_duality_gap"):
        levels = {round(r.metrics[glossary.REG_NE_GAP], 9) for r in runs if glossary.REG_NE_GAP in r.metrics}
        taus = {r.params.get("metrics.tau") for r in runs}
        if len(levels) == 1:
            tau = f" (τ = {next(iter(taus))})" if len(taus) == 1 and None not in taus else ""
            lines.append((next(iter(levels)), rf"$\pi^*_\tau${tau}: {next(iter(levels)):.3g}"))
    if metric in ("game/duality_gap", "game/reg_duality_gap", "game/avg_duality_gap", "game/avg_reg_duality_gap"):
        eps = {r.params.get("summary.epsilon") for r in runs}
        if len(eps) == 1 and None not in eps:
            lines.append((float(next(iter(eps))), f"ε = {next(iter(eps))}"))
    return lines


def plot_latest_evaluation(tracking_uri: str, eval_experiment: str, experiment: str, out: Path) -> list[Path]:
    """``win_rate_matrix.png``/``.pdf``: the heatmap of the latest finished ``eval`` of this experiment's runs
    (an eval run tagged ``source_experiment``), redrawn from its ``win_rate_matrix.json``; [] if there is none."""
    import json

    from lit_nash import tracking

    client = tracking.client(tracking_uri)
    run_id = tracking.latest_eval_run(client, eval_experiment, experiment)
    if run_id is None:
        return []
    r = json.loads(tracking.download_artifact(client, run_id, "win_rate_matrix.json"))
    return plot_win_rates(r["policies"], r["win_rate"], r["win_rate_ci95"], out / "win_rate_matrix.png",
                          f"eval run {run_id[:8]}: {sample_size(r['prompts'], r['samples'])}, ± the 95% half-width",
                          r.get("exact_win_rate"))
