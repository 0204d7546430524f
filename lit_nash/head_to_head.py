"""``eval``'s head-to-head results as data: who won, as MLflow metrics and tables rather than only a picture.

From the win-rate matrix of an evaluation (``win_rate``, ``win_rate_ci95``, ``pairs``; on a game also
``exact_win_rate``):

* a Bradley–Terry ranking with intervals (``lit_nash.ranking.bradley_terry``): each policy's Elo rating and
  its 95% half-width, its score and its rank; on a game also the exact matrix's Elo;
* per policy, metrics named after each opponent: ``vs/<opponent>`` = P(policy ≻ opponent) with
  ``vs_ci95/<opponent>`` (and ``vs_exact/<opponent>`` on a game), and ``rank/elo``, ``rank/elo_ci95``,
  ``rank/position``. Logged on the policy's child run, the MLflow UI's chart of ``vs/<opponent>`` is one bar
  per policy: a column of the matrix;
* two MLflow tables for the evaluation's run (the artifact viewer shows them as tables):
  ``head_to_head.json``, one row per ordered pair with its interval and whether it excludes ½, and
  ``ranking.json``, the ranking."""

from __future__ import annotations

import re
from typing import Any

from lit_nash.heatmap import short_labels, significant
from lit_nash.ranking import bradley_terry


def opponent_names(policies: list[str]) -> list[str]:
    """The names opponents go by in metric keys: the policies' short names (the parts all share dropped),
    with only the characters MLflow allows in a key."""
    short, _ = short_labels(policies)
    return [re.sub(r"[^A-Za-z0-9_\-. ]", "_", name) for name in short]


def ranking_of(r: dict[str, Any]) -> dict[str, Any]:
    """The Bradley–Terry fit of an evaluation's matrix: ``elo``, ``elo_ci95``, ``bt_score``, ``rank`` (1 = best)
    per policy, and ``exact_elo`` on a game."""
    scores = bradley_terry(r["policies"], r["win_rate"], r["win_rate_ci95"], r["pairs"])
    rank = [0] * len(r["policies"])
    for position, i in enumerate(scores.order()):
        rank[i] = position + 1
    out = {"elo": scores.elo, "elo_ci95": scores.elo_half, "bt_score": scores.scores, "rank": rank}
    if "exact_win_rate" in r:
        out["exact_elo"] = bradley_terry(r["policies"], r["exact_win_rate"]).elo
    return out


def policy_metrics(r: dict[str, Any], i: int) -> dict[str, float]:
    """Policy ``i``'s head-to-head metrics (module docstring)."""
    names = opponent_names(r["policies"])
    metrics: dict[str, float] = {"rank/elo": r["elo"][i], "rank/position": r["rank"][i]}
    if r["elo_ci95"][i] is not None:
        metrics["rank/elo_ci95"] = r["elo_ci95"][i]
    if "exact_elo" in r:
        metrics["rank/exact_elo"] = r["exact_elo"][i]
    for j, opponent in enumerate(names):
        if j == i:
            continue
        metrics[f"vs/{opponent}"] = r["win_rate"][i][j]
        metrics[f"vs_ci95/{opponent}"] = r["win_rate_ci95"][i][j]
        if "exact_win_rate" in r:
            metrics[f"vs_exact/{opponent}"] = r["exact_win_rate"][i][j]
    return metrics


def pair_rows(r: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per ordered pair of different policies: the estimate, its interval, whether it excludes ½."""
    sig = significant(r["win_rate"], r["win_rate_ci95"])
    rows = []
    for i, a in enumerate(r["policies"]):
        for j, b in enumerate(r["policies"]):
            if i == j:
                continue
            p, h = r["win_rate"][i][j], r["win_rate_ci95"][i][j]
            row = {"policy": a, "opponent": b, "p_policy_wins": round(p, 4), "ci95_low": round(p - h, 4),
                   "ci95_high": round(p + h, 4), "significant": bool(sig[i][j]), "pairs": r["pairs"]}
            if "exact_win_rate" in r:
                row["exact"] = round(r["exact_win_rate"][i][j], 4)
            rows.append(row)
    return rows


def ranking_rows(r: dict[str, Any]) -> list[dict[str, Any]]:
    """The ranking, best first."""
    rows = []
    for i in sorted(range(len(r["policies"])), key=lambda i: r["rank"][i]):
        half = r["elo_ci95"][i]
        row = {"rank": r["rank"][i], "policy": r["policies"][i], "elo": round(r["elo"][i], 1),
               "elo_ci95_low": None if half is None else round(r["elo"][i] - half, 1),
               "elo_ci95_high": None if half is None else round(r["elo"][i] + half, 1),
               "bt_score": round(r["bt_score"][i], 4)}
        if "exact_elo" in r:
            row["exact_elo"] = round(r["exact_elo"][i], 1)
        rows.append(row)
    return rows


def ranking_markdown(r: dict[str, Any]) -> str:
    exact = "exact_elo" in r
    lines = ["Ranking: a Bradley–Terry fit of the matrix, on the Elo scale (400 points: a win rate of 10/11), "
             "± the 95% half-width:", "",
             "| rank | policy | Elo | score |" + (" exact Elo |" if exact else ""), "|---|---|---|---|" + ("---|" if exact else "")]
    for row in ranking_rows(r):
        half = "" if row["elo_ci95_low"] is None else f" ± {row['elo'] - row['elo_ci95_low']:.0f}"
        lines.append(f"| {row['rank']} | {row['policy']} | {row['elo']:.0f}{half} | {row['bt_score']:+.3f} |"
                     + (f" {row['exact_elo']:.0f} |" if exact else ""))
    return "\n".join(lines)


def log_tables(client, run_id: str, r: dict[str, Any]) -> None:
    """``head_to_head.json`` and ``ranking.json`` as MLflow tables of the evaluation's run."""
    for name, rows in (("head_to_head.json", pair_rows(r)), ("ranking.json", ranking_rows(r))):
        if rows:
            client.log_table(run_id, data={key: [row.get(key) for row in rows] for key in rows[0]}, artifact_file=name)
