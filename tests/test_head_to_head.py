"""Head-to-head results as data (issue 26): the Bradley–Terry/Elo ranking with intervals (lit_nash/ranking.py),
and ``eval`` logging P(row ≻ column) with intervals as metrics of each policy's run, the pairs and the ranking
as MLflow tables: a real eval of three real fits, read back from the store."""

import json
import math

import numpy as np
import pytest
from mlflow import MlflowClient

from lit_nash.ranking import ELO_SCALE, Estimate, bradley_terry, rank

from .cli import run_cli


def bt_matrix(scores):
    s = np.asarray(scores, dtype=float)
    return 1 / (1 + np.exp(-(s[:, None] - s[None, :])))


def test_bradley_terry_recovers_the_scores_of_a_bradley_terry_matrix():
    truth = np.array([0.8, 0.1, -0.9])
    fit = bradley_terry(["a", "b", "c"], bt_matrix(truth))
    np.testing.assert_allclose(fit.scores, truth - truth.mean(), atol=1e-9)
    assert fit.half == [None, None, None] and fit.order() == [0, 1, 2]
    assert fit.elo[0] - fit.elo[1] == pytest.approx(ELO_SCALE * 0.7)  # 400·log10(e) per unit of score


def test_the_intervals_come_from_the_win_rates_intervals_and_shrink_with_more_pairs():
    P = bt_matrix([0.5, 0.0, -0.5])
    wide = bradley_terry(["a", "b", "c"], P, np.full((3, 3), 0.2), pairs=32)
    narrow = bradley_terry(["a", "b", "c"], P, np.full((3, 3), 0.05), pairs=512)
    assert all(n < w for n, w in zip(narrow.half, wide.half))
    # one pair: score difference = logit p, its half-width = 1.96·se/(p(1−p)) split between the two (Σ s = 0)
    two = bradley_terry(["a", "b"], [[0.5, 0.6], [0.4, 0.5]], [[0, 0.1], [0.1, 0]], pairs=100)
    assert two.scores[0] - two.scores[1] == pytest.approx(math.log(0.6 / 0.4))
    assert two.half[0] == pytest.approx(1.959964 * (0.1 / 1.959964) / (0.6 * 0.4) / 2)
    # an estimate of 1 or an interval of 0 (every pair tied) stays finite
    sure = bradley_terry(["a", "b"], [[0.5, 1.0], [0.0, 0.5]], [[0, 0.0], [0.0, 0]], pairs=16)
    assert all(math.isfinite(v) for v in sure.scores + sure.half)


def test_groups_rank_by_the_mean_over_seeds_and_one_seed_has_no_interval():
    assert Estimate.over_seeds([0.5]).text() == "0.5 (1 seed)"
    e = Estimate.over_seeds([1.0, 3.0])
    assert e.half == pytest.approx(12.7062047 * math.sqrt(2) / math.sqrt(2)) and e.text() == "2 ± 13 (2 seeds)"
    ranked = rank({"a": Estimate.over_seeds([0.1, 0.2, 0.3]), "b": Estimate.over_seeds([0.05, 0.06, 0.07]),
                   "c": Estimate.over_seeds([0.9, 0.91, 0.92])})
    assert [(r["rank"], r["group"], r["with_best"]) for r in ranked] == [(1, "b", True), (2, "a", True), (3, "c", False)]
    assert [r["group"] for r in rank({"x": Estimate.over_seeds([0.2]), "y": Estimate.over_seeds([0.7])}, True)] == ["y", "x"]


def test_eval_logs_the_head_to_head_matrix_as_metrics_and_tables_and_a_ranking(tmp_path):
    done = run_cli("fit", "-m", "algo=mpo,sppo,online_ipo", "rollout=sampled", "trainer.max_steps=60",
                   "trainer.enable_progress_bar=false", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    out = run_cli("eval", "samples=64", f"out={tmp_path / 'ev'}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads((tmp_path / "ev" / "win_rate_matrix.json").read_text())
    names = ["mpo", "sppo", "online_ipo"]
    assert [p.split("-")[0] for p in r["policies"]] == names and sorted(r["rank"]) == [1, 2, 3]
    assert "Ranking: a Bradley–Terry fit" in out.stdout and "exact Elo" in out.stdout

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}")
    ev, *children = client.search_runs([client.get_experiment_by_name("lit_nash_eval").experiment_id],
                                       order_by=["attributes.start_time ASC"])
    for i, child in enumerate(children):
        m = child.data.metrics
        for j, opponent in enumerate(names):
            if j != i:  # P(row ≻ column) and its interval, named after the opponent
                assert m[f"vs/{opponent}"] == r["win_rate"][i][j] and m[f"vs_ci95/{opponent}"] == r["win_rate_ci95"][i][j]
                assert m[f"vs_exact/{opponent}"] == r["exact_win_rate"][i][j]
        assert f"vs/{names[i]}" not in m
        assert m["rank/elo"] == r["elo"][i] and m["rank/elo_ci95"] > 0 and m["rank/position"] == r["rank"][i]
    logged = {a["path"] for a in json.loads(ev.data.tags["mlflow.loggedArtifacts"]) if a["type"] == "table"}
    assert logged == {"head_to_head.json", "ranking.json"}
    pairs = json.loads(open(client.download_artifacts(ev.info.run_id, "head_to_head.json", str(tmp_path))).read())
    assert pairs["columns"][:6] == ["policy", "opponent", "p_policy_wins", "ci95_low", "ci95_high", "significant"]
    assert len(pairs["data"]) == 6  # every ordered pair of different policies
    for row in pairs["data"]:
        p, low, high, significant = row[2:6]
        assert low <= p <= high and significant == (not low <= 0.5 <= high)
    ranking = json.loads(open(client.download_artifacts(ev.info.run_id, "ranking.json", str(tmp_path))).read())
    assert [row[0] for row in ranking["data"]] == [1, 2, 3]
    elo = dict(zip(r["policies"], r["elo"]))
    assert [row[2] for row in ranking["data"]] == [round(elo[row[1]], 1) for row in ranking["data"]]
    assert {a.path for a in client.list_artifacts(ev.info.run_id)} >= {"win_rate_matrix.png", "win_rate_matrix.pdf"}
