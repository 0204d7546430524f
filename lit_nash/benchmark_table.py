"""The NLHF benchmark (``compare mode=benchmark``): for each algorithm × game × play mode, over seeds, what it
costs until the gap to the algorithm's own target first stays at most ε, for the last iterate and for the
average iterate: optimizer steps, preference queries and wall time.

* **The gap to its target.** An algorithm that converges to the NE of the original game (the run's tag
  ``target=NE``: MPO, COMAL, SPPO) is measured on the duality gap, ``game/duality_gap``; one that converges to
  π*_τ, the equilibrium of the game regularized by τ·KL toward its reference (``target=regularized NE``), on
  the regularized game's duality gap, ``game/reg_duality_gap`` (τ = the algorithm's own, ``metrics.tau``). The
  average iterate (``game/avg_*``) is measured on the same gap. Both iterates are measured for every
  algorithm; the one its paper claims (the tag ``iterate``) is marked.
* **ε** is set per game and per kind of gap (``ne``, ``reg``) in ``conf/compare.yaml``'s ``benchmark.epsilon``.
* **The crossing** is ``lit_nash.run_summary.crossing``: the first logged step from which the gap stays at most
  ε to the end of the run (steps counted as optimizer steps done), the run's ``pref/queries`` at that step
  and the seconds since its first logged gap. It is measured on the steps the run logged its gaps, so it is
  exact to ``trainer.log_every_n_steps``; a run whose last logged gap is above ε did not reach it.

A row is one algorithm on one task (game, its number of responses, play mode, run length), each seed once
(``lit_nash.run_groups.grouped``); each cell is the mean over the seeds that reached ε, ± the half-width of its
95% interval when all of them did, with the count reached where only some did (a mean over the seeds that
reached is a lower bound of the cost)."""

from __future__ import annotations

import csv
from pathlib import Path

from lit_nash.ranking import Estimate
from lit_nash.run_groups import Run, on_x
from lit_nash.run_summary import crossing

GAPS = {"NE": ("game/duality_gap", "game/avg_duality_gap"),
        "regularized NE": ("game/reg_duality_gap", "game/avg_reg_duality_gap")}
KIND = {"NE": "ne", "regularized NE": "reg"}  # the key of each kind of gap in benchmark.epsilon
GAP_NAME = {"NE": "NE gap", "regularized NE": "reg. gap"}
ITERATES = ("last", "average")
MEASURES = ("steps", "queries", "seconds")
QUERIES = "pref/queries"
METRICS = [*GAPS["NE"], *GAPS["regularized NE"], QUERIES]  # what a run's histories must hold


def epsilon_of(epsilons: dict, game: str | None, target: str) -> float:
    """ε of ``game``'s gap of kind ``target`` (its own entry of ``benchmark.epsilon``, else ``default``)."""
    entry = epsilons.get(game) or epsilons.get("default")
    if not entry or KIND[target] not in entry:
        raise SystemExit(f"lit_nash compare: benchmark.epsilon has no {KIND[target]!r} for game {game!r} and no "
                         f"default; set e.g. benchmark.epsilon.default.{KIND[target]}=0.03 (it has {sorted(epsilons)})")
    value = float(entry[KIND[target]])
    if not value > 0:
        raise SystemExit(f"lit_nash compare: benchmark.epsilon.{game}.{KIND[target]} must be > 0, got {value}")
    return value


def measure(run: Run, epsilons: dict, targets: dict[str, str]) -> dict | None:
    """One run's crossings: its target and ε, and per iterate the crossing (None: not reached) and the final
    gap. ``targets`` gives an algorithm's target where the run has no ``target`` tag; None if neither knows."""
    algo = run.tags.get("algo")
    target = run.tags.get("target") or targets.get(algo)
    if target not in GAPS:
        return None
    eps = epsilon_of(epsilons, run.tags.get("game"), target)
    record = {"run": run, "algo": algo, "target": target, "epsilon": eps, "claims": run.tags.get("iterate", "last")}
    for iterate, key in zip(ITERATES, GAPS[target]):
        points = run.steps.get(key) or []
        record[iterate] = crossing(points, eps, run.steps.get(QUERIES)) if points else None
        record[f"{iterate}_final"] = points[-1][1] if points else None
    return record


def rows(groups: dict[str, list[Run]], epsilons: dict, targets: dict[str, str]) -> tuple[list[dict], list[str]]:
    """One row per group (an algorithm on a task), sorted by game, size, play mode, length and algorithm; and
    the notes on runs left out (no known target)."""
    out, unknown = [], []
    for runs in groups.values():
        records = []
        for run in runs:
            record = measure(run, epsilons, targets)
            records.append(record) if record is not None else unknown.append(run.name)
        if not records:
            continue
        first = records[0]
        game, mode, steps, responses = first["run"].task
        row = {"game": game, "responses": responses, "rollout": mode, "max_steps": steps, "algo": first["algo"],
               "target": first["target"], "gap": GAPS[first["target"]][0], "epsilon": first["epsilon"],
               "claims": first["claims"], "n": len(records), "records": records,
               "seeds": sorted((r["run"].seed for r in records), key=lambda s: (not s.isdigit(), int(s) if s.isdigit() else s))}
        for iterate in ITERATES:
            reached = [r[iterate] for r in records if r[iterate] is not None]
            row[f"{iterate}_reached"] = len(reached)
            for m in MEASURES:
                values = [c[m] for c in reached if m in c]
                row[f"{iterate}_{m}"] = Estimate.over_seeds(values) if values else None
            finals = [r[f"{iterate}_final"] for r in records if r[f"{iterate}_final"] is not None]
            row[f"{iterate}_final"] = Estimate.over_seeds(finals) if finals else None
        out.append(row)
    order = {"exact": 0, "sampled": 1}
    out.sort(key=lambda r: (r["game"] or "", int(r["responses"] or 0), order.get(r["rollout"], 2),
                            int(r["max_steps"] or 0), r["algo"]))
    notes = [f"{len(unknown)} run(s) left out: no `target` tag and an algorithm this lit_nash does not know "
             f"({', '.join(unknown[:5])})"] if unknown else []
    return out, notes


def number(x: float, measure: str) -> str:
    """A cost as a reader reads it: steps and queries from 100 whole (``12,000``; ``3.4e+07`` from ten
    million), smaller ones and seconds to 3 significant digits."""
    if measure == "seconds" or abs(x) < 100:
        return f"{x:.3g}"
    return f"{x:,.0f}" if abs(x) < 1e7 else f"{x:.3g}"


def cell(row: dict, iterate: str, measure: str) -> str:
    """``1,200 ± 310`` (every seed reached ε), ``1,200 (2/3)`` (only some: their mean), ``— (0/3)`` (none)."""
    estimate, reached, n = row[f"{iterate}_{measure}"], row[f"{iterate}_reached"], row["n"]
    if estimate is None:
        return f"— (0/{n})" if reached == 0 and measure == "steps" else "—"
    text = number(estimate.mean, measure)
    if reached < n:
        return f"{text} ({reached}/{n})"
    if estimate.half is not None:
        text += f" ± {number(estimate.half, measure)}"
    return f"**{text}**" if row["claims"] == iterate else text


def task_label(row: dict) -> str:
    return f"{row['game']} ({row['responses']} responses)" if row["responses"] else str(row["game"])


def to_markdown(rows: list[dict]) -> str:
    head = ["game", "play", "steps run", "algo", "gap ≤ ε", "seeds"]
    head += [f"{it}: {m}" for it in ITERATES for m in MEASURES] + ["final gap: last / average"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for row in rows:
        finals = " / ".join(f"{row[f'{it}_final'].mean:.3g}" if row[f"{it}_final"] else "—" for it in ITERATES)
        cells = [task_label(row), row["rollout"], row["max_steps"] or "?", row["algo"],
                 f"{GAP_NAME[row['target']]} ≤ {row['epsilon']:g}", row["n"]]
        cells += [cell(row, it, m) for it in ITERATES for m in MEASURES] + [finals]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += ["", "What it cost until the gap to the algorithm's own target first stays at most ε to the end of "
              "the run: optimizer steps, preference queries (`pref/queries`) and seconds since the first logged "
              "gap, for the last iterate and for the average iterate. NE gap: the duality gap of the original "
              "game (algorithms that converge to its NE); reg. gap: that of the game regularized by τ·KL toward the "
              "reference (algorithms that converge to π*_τ). Each cell: the mean over seeds ± the half-width of "
              "its 95% interval; (k/n): only k of the n seeds reached ε, their mean; —: none did. **Bold**: the "
              "iterate the algorithm's paper claims converges. The final gaps are the means over seeds at the "
              "last step."]
    return "\n".join(lines)


def write_csv(rows: list[dict], path: Path) -> Path:
    """One row per algorithm and task: per iterate and measure ``_mean``, ``_ci95`` (empty for one seed) and
    the seeds that reached ε (``<iterate>_reached``), and the final gap's mean."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["game", "responses", "rollout", "max_steps", "algo", "target", "gap", "epsilon", "claims",
                         "n_seeds", "seeds", *(f"{it}_{col}" for it in ITERATES for col in (
                             "reached", *(f"{m}_{s}" for m in MEASURES for s in ("mean", "ci95")), "final_gap_mean"))])
        for row in rows:
            cells = []
            for it in ITERATES:
                cells.append(row[f"{it}_reached"])
                for m in MEASURES:
                    e = row[f"{it}_{m}"]
                    cells += [e.mean, "" if e.half is None else e.half] if e else ["", ""]
                cells.append(row[f"{it}_final"].mean if row[f"{it}_final"] else "")
            writer.writerow([row["game"], row["responses"] or "", row["rollout"], row["max_steps"] or "", row["algo"],
                             row["target"], row["gap"], row["epsilon"], row["claims"], row["n"], " ".join(row["seeds"]),
                             *cells])
    return path


def write_runs_csv(rows: list[dict], path: Path) -> Path:
    """One row per run: its crossing of each iterate (empty where it did not reach ε) and its final gaps."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["run_id", "run", "game", "responses", "rollout", "max_steps", "algo", "seed", "target", "gap",
                         "epsilon", "claims", *(f"{it}_{m}" for it in ITERATES for m in (*MEASURES, "final_gap"))])
        for row in rows:
            for r in row["records"]:
                cells = []
                for it in ITERATES:
                    reached = r[it] or {}
                    cells += [reached.get(m, "") for m in MEASURES] + [r[f"{it}_final"] if r[f"{it}_final"] is not None else ""]
                writer.writerow([r["run"].run_id, r["run"].name, row["game"], row["responses"] or "", row["rollout"],
                                 row["max_steps"] or "", row["algo"], r["run"].seed, row["target"], row["gap"],
                                 row["epsilon"], row["claims"], *cells])
    return path


def panels(rows: list[dict]) -> dict[str, dict]:
    """The plot's data: per task (a row of panels) and iterate (a column), per algorithm, each seed's gap to
    its target against its preference queries (``{x: gap}``) and whether its paper claims this iterate:
    ``{task: {"epsilon": {gap name: ε}, "curves": {iterate: {algo: (claimed, [{x: gap}, ...])}}}}``. A run that
    logged no ``pref/queries`` is not drawn."""
    out: dict[str, dict] = {}
    for row in rows:
        task = f"{task_label(row)}, {row['rollout']} play, {row['max_steps']} steps"
        panel = out.setdefault(task, {"epsilon": {}, "curves": {it: {} for it in ITERATES}})
        panel["epsilon"][GAP_NAME[row["target"]]] = row["epsilon"]
        for r in row["records"]:
            curves = on_x(r["run"], QUERIES)
            for iterate, key in zip(ITERATES, GAPS[row["target"]]):
                if curves.get(key):
                    claimed, seeds = panel["curves"][iterate].setdefault(row["algo"], (row["claims"] == iterate, []))
                    seeds.append(dict(curves[key]))
    return out
