"""``compare``'s tables: each metric's final value per group as the mean over seeds with its 95% interval
(``lit_nash.ranking.Estimate``; one seed shows its count, never "± 0"), the ranking of the groups, the runs
left out of the means because they are incomplete, and notes on groups whose settings make them the same
algorithm (MPO whose magnet never moves is MMD)."""

from __future__ import annotations

import csv
import statistics
from pathlib import Path

from lit_nash import glossary
from lit_nash.ranking import Estimate, rank
from lit_nash.run_groups import Run, label

RANK_CANDIDATES = ("summary/gap_window", "game/duality_gap", "summary/win_rate_vs_ref", "eval/win_rate_vs_ref")


def value(run: Run, key: str) -> float | None:
    """A run's result for ``key``: the final value of a metric it logged over steps, else its latest value
    (the summary metrics are logged once)."""
    final = run.final(key)
    return final if final is not None else run.metrics.get(key)


def seed_order(seed: str):
    return (0, int(seed), "") if seed.lstrip("-").isdigit() else (1, 0, seed)


def summarize(groups: dict[str, list[Run]], metrics: list[str]) -> list[dict]:
    """One row per group: its seeds, and per metric the ``Estimate`` over the runs' final values (None where
    no run logged it) and their standard deviation."""
    rows = []
    for name, runs in groups.items():
        row = {"group": name, "values": runs[0].values, "seeds": sorted({r.seed for r in runs}, key=seed_order),
               "n": len(runs), "std": {}}
        for metric in metrics:
            finals = [v for r in runs if (v := value(r, metric)) is not None]
            row[metric] = Estimate.over_seeds(finals) if finals else None
            row["std"][metric] = statistics.stdev(finals) if len(finals) > 1 else 0.0
        rows.append(row)
    return rows


def cell(estimate: Estimate | None, n_runs: int) -> str:
    """``0.0123 ± 0.0041``, ``0.0123 (n=1)`` for one seed, ``(n=2)`` appended where fewer runs logged it."""
    if estimate is None:
        return "—"
    if estimate.half is None:
        return f"{estimate.mean:.4g} (n=1)"
    return f"{estimate.mean:.4g} ± {estimate.half:.2g}" + (f" (n={estimate.n})" if estimate.n != n_runs else "")


def to_markdown(rows: list[dict], metrics: list[str], title: str) -> str:
    lines = [f"| {title} | seeds | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 2) + "|"]
    for row in rows:
        lines.append(f"| {row['group']} | {row['n']} | " + " | ".join(cell(row[m], row["n"]) for m in metrics) + " |")
    lines += ["", "Each cell: the final value's mean over seeds ± the half-width of its 95% interval (Student t); "
              "one seed has no interval and shows n=1."]
    known = [m for m in metrics if glossary.label(m) != m]
    if known:
        lines.append("; ".join(f"{m}: {glossary.label(m)}" for m in known) + ".")
    return "\n".join(lines)


def write_csv(rows: list[dict], metrics: list[str], keys: list[str], path: Path) -> Path:
    """One row per group: its label (for several keys or tasks), each key's value (empty where missing), the
    seeds and per metric ``_mean``, ``_std``, ``_ci95`` (empty for one seed) and ``_n``."""
    several = len(keys) > 1 or any(row["group"] != label(row["values"], keys) for row in rows)  # split by task
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*(["group"] if several else []), *keys, "n_seeds", "seeds",
                         *(f"{m}_{s}" for m in metrics for s in ("mean", "std", "ci95", "n"))])
        for row in rows:
            cells = []
            for metric in metrics:
                e = row[metric]
                cells += [e.mean, row["std"][metric], "" if e.half is None else e.half, e.n] if e else ["", "", "", 0]
            values = ["" if v is None else v for v in row["values"]]
            writer.writerow([*([row["group"]] if several else []), *values, row["n"], " ".join(row["seeds"]), *cells])
    return path


def rank_metric(groups: dict[str, list[Run]], wanted: str | None) -> str | None:
    """The metric the ranking uses: ``wanted``, else the first of ``RANK_CANDIDATES`` some run has."""
    have = {k for runs in groups.values() for r in runs for k in (*r.metrics, *r.steps)}
    if wanted:
        if wanted not in have:
            raise SystemExit(f"lit_nash compare: rank_by={wanted!r}: no compared run logged it; they logged "
                             f"{sorted(have)}")
        return wanted
    return next((k for k in RANK_CANDIDATES if k in have), None)


def ranking(groups: dict[str, list[Run]], metric: str) -> list[dict]:
    """The groups ranked by the mean over their seeds of ``metric`` (best first, lower better unless the
    glossary says higher), with how many of their runs converged."""
    estimates, converged = {}, {}
    for name, runs in groups.items():
        values = [v for r in runs if (v := value(r, metric)) is not None]
        if values:
            estimates[name] = Estimate.over_seeds(values)
        verdicts = [r.tags["converged"] for r in runs if "converged" in r.tags]
        converged[name] = (verdicts.count("true"), len(verdicts))
    ranked = rank(estimates, glossary.higher_is_better(metric))
    for row in ranked:
        row["converged"] = converged[row["group"]]
    return ranked


def ranking_markdown(ranked: list[dict], metric: str, title: str) -> str:
    better = "highest" if glossary.higher_is_better(metric) else "lowest"
    lines = [f"Ranked by {glossary.label(metric)} ({metric}), the {better} mean over seeds first:", "",
             f"| rank | {title} | {metric}: mean ± 95% CI (seeds) | converged | |", "|---|---|---|---|---|"]
    for row in ranked:
        done, of = row["converged"]
        mark = "best" if row["rank"] == 1 else ("≈ best (intervals overlap)" if row["with_best"] else "")
        lines.append(f"| {row['rank']} | {row['group']} | {row['estimate'].text()} | "
                     f"{f'{done} of {of}' if of else '—'} | {mark} |")
    return "\n".join(lines)


def ranking_csv(ranked: list[dict], metric: str, path: Path) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["rank", "group", "n_seeds", f"{metric}_mean", f"{metric}_ci95_low", f"{metric}_ci95_high",
                         "converged", "with_best"])
        for row in ranked:
            e = row["estimate"]
            writer.writerow([row["rank"], row["group"], e.n, e.mean, "" if e.half is None else e.low,
                             "" if e.half is None else e.high, row["converged"][0], row["with_best"]])
    return path


def incomplete_markdown(runs: list[Run], group_of) -> str:
    """The incomplete runs, apart: name, group, seed, status, last step of max_steps."""
    lines = ["Incomplete runs, not in any mean (stopped, failed, still running, or finished short of "
             "trainer.max_steps):", "", "| run | group | seed | status | last step |", "|---|---|---|---|---|"]
    for run in runs:
        last = run.last_step
        steps = ("none logged" if last is None else f"{last + 1}") + (f" of {run.max_steps}" if run.max_steps else "")
        lines.append(f"| {run.name} | {group_of(run)} | {run.seed} | {run.status} | {steps} |")
    return "\n".join(lines)


def _never_moves(params: dict, key: str) -> bool:
    period, steps = params.get(key), params.get("trainer.max_steps")
    if period in (None, "None", "null", "", "0"):
        return True
    return bool(steps and period.isdigit() and steps.isdigit() and int(period) >= int(steps))


def same_algorithm(a: list[Run], b: list[Run]) -> str | None:
    """Why two groups are one algorithm, when their settings make them so: MPO whose magnet never moves within
    the run (``algo.magnet_every`` null or at least ``trainer.max_steps``) is MMD with the same other settings."""
    for mpo, mmd in ((a, b), (b, a)):
        if {r.tags.get("algo") for r in mpo} != {"mpo"} or {r.tags.get("algo") for r in mmd} != {"mmd"}:
            continue
        p, q = mpo[0].params, mmd[0].params
        shared = [k for k in q if k.startswith("algo.") and k != "algo._target_"]
        if all(_never_moves(r.params, "algo.magnet_every") for r in mpo) and all(p.get(k) == q[k] for k in shared):
            return (f"MPO with algo.magnet_every={p.get('algo.magnet_every')} and trainer.max_steps="
                    f"{p.get('trainer.max_steps')} never moves its magnet off the reference: it is MMD with the same settings")
    return None


def identical(a: list[Run], b: list[Run]) -> bool:
    """Whether two groups logged the same curves seed by seed (for the seeds they share, at least one)."""
    by_seed = {r.seed: r for r in b}
    shared = [(r, by_seed[r.seed]) for r in a if r.seed in by_seed]
    return bool(shared) and all(
        {m: [p[:2] for p in h] for m, h in x.steps.items()} == {m: [p[:2] for p in h] for m, h in y.steps.items()}
        for x, y in shared)


def identity_notes(groups: dict[str, list[Run]]) -> list[str]:
    """A note per pair of groups that are the same algorithm by their settings, or gave identical curves."""
    notes, names = [], list(groups)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            why, same = same_algorithm(groups[a], groups[b]), identical(groups[a], groups[b])
            if why:
                notes.append(f"{a} and {b} are the same algorithm here: {why}"
                             + (" (their curves are identical seed by seed)" if same else ""))
            elif same:
                notes.append(f"{a} and {b} logged identical curves seed by seed: their settings make them the same dynamics")
    return notes
