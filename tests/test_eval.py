"""``python -m lit_nash eval`` and periodic evaluation, end to end through the real CLI and MLflow store.

On a token game the sampled win rates can be checked against the exact ones computed from the policies'
distributions: the estimate must lie within 4 standard errors of the truth (the printed 95% half-width is
1.96 standard errors; a 4σ miss has probability 6e-5, and the seeds are fixed).
"""

import json

import matplotlib.image
import mlflow
import numpy as np
import pytest

from tests.cli import run_cli

SE_PER_CI = 1 / 1.959964


def load_result(out):
    return json.loads((out / "win_rate_matrix.json").read_text())


def check_matrix(r, k):
    M = np.array(r["win_rate"])
    assert M.shape == (k, k)
    np.testing.assert_allclose(M + M.T, np.ones((k, k)), atol=1e-12)  # P(i ≻ j) + P(j ≻ i) = 1, ½ on the diagonal
    assert ((0 <= M) & (M <= 1)).all()
    return M


@pytest.fixture(scope="module")
def token_runs(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("eval_token")
    done = run_cli("fit", "-m", "task=token_game", "algo=egpo,sppo", "trainer.max_steps=40",
                   "trainer.enable_progress_bar=false", "eval.every_n_steps=20", "eval.samples=2", cwd=cwd)
    assert done.returncode == 0, done.stderr[-3000:]
    client = mlflow.MlflowClient(f"sqlite:///{cwd}/mlruns.db")
    runs = client.search_runs([client.get_experiment_by_name("lit_nash").experiment_id], "tags.algo != ''",
                              order_by=["attributes.start_time ASC"])  # the jobs, not the sweep's own run
    return cwd, client, runs


def test_eval_of_two_token_game_policies_matches_the_exact_win_rates(token_runs, tmp_path):
    cwd, client, runs = token_runs
    assert [r.data.tags["algo"] for r in runs] == ["egpo", "sppo"]
    done = done_by_run = run_cli("eval", "samples=32", f"out={tmp_path}/by_run", cwd=cwd)  # every finished run of lit_nash
    assert done.returncode == 0, done.stderr[-3000:]
    assert "P(row ≻ column)" in done.stdout and "egpo-token_game-seed0" in done.stdout
    r = load_result(tmp_path / "by_run")
    assert r["policies"] == ["egpo-token_game-seed0", "sppo-token_game-seed0"] and r["pairs"] == 4 * 32
    M = check_matrix(r, 2)
    E = np.array(r["exact_win_rate"])
    np.testing.assert_allclose(E + E.T, np.ones((2, 2)), atol=1e-9)
    assert abs(M[0, 1] - E[0, 1]) <= 4 * SE_PER_CI * r["win_rate_ci95"][0][1]
    for est, ci, exact in zip(r["win_rate_vs_ref"], r["win_rate_vs_ref_ci95"], r["exact_win_rate_vs_ref"]):
        assert abs(est - exact) <= 4 * SE_PER_CI * ci
    assert r["exact_win_rate_vs_ref"][1] > 0.6  # SPPO has learned something in 40 steps: it beats its start
    for gaps in r["exact_gaps"]:
        assert set(gaps) >= {"game/duality_gap", "game/reg_duality_gap", "game/exploitability", "game/kl_to_ne"}

    # the same policies by checkpoint path: the same numbers (same seed, same samples)
    paths = [run.data.tags["checkpoint"] for run in runs]
    done = run_cli("eval", f"policies=['{paths[0]}','{paths[1]}']", "samples=32", f"out={tmp_path}/by_path",
                   "log_experiment=null", cwd=cwd)
    assert done.returncode == 0, done.stderr[-3000:]
    assert load_result(tmp_path / "by_path")["win_rate"] == r["win_rate"]

    # logged: one eval run with the matrix as artifacts, and under it one child run per policy (tag policy) with
    # its metrics under the names training runs use, so the MLflow UI compares the policies in one chart each
    ev, *children = client.search_runs([client.get_experiment_by_name("lit_nash_eval").experiment_id],
                                       order_by=["attributes.start_time ASC"])
    assert ev.data.tags["command"] == "eval" and ev.info.run_id == r["mlflow_run_id"] and ev.data.metrics == {}
    assert [c.data.tags["policy"] for c in children] == r["policies"] == [c.info.run_name for c in children]
    for i, child in enumerate(children):
        assert child.data.tags["mlflow.parentRunId"] == ev.info.run_id
        assert child.data.tags["policy_checkpoint"] == r["checkpoints"][i]
        assert child.data.metrics["eval/win_rate_vs_ref"] == r["win_rate_vs_ref"][i]
        assert child.data.metrics["eval_ci95/win_rate_vs_ref"] == r["win_rate_vs_ref_ci95"][i]
        assert child.data.metrics["eval_ci95/pairs"] == 4 * 32
        assert child.data.metrics["game/duality_gap"] == r["exact_gaps"][i]["game/duality_gap"]
        assert not any(r["policies"][0] in name for name in child.data.metrics)  # no <metric>/<policy> names
    assert "win rate vs ref (95% CI, 128 pairs)" in done_by_run.stdout
    artifacts = {a.path for a in client.list_artifacts(ev.info.run_id)}
    assert {"table.md", "win_rate_matrix.json", "win_rate_matrix.csv", "win_rate_matrix.png"} <= artifacts
    image = matplotlib.image.imread(tmp_path / "by_run" / "win_rate_matrix.png")
    assert min(image.shape[:2]) > 200


def test_periodic_evaluation_during_training_is_logged(token_runs, tmp_path):
    cwd, client, runs = token_runs
    for run in runs:
        for opponent in ("ref", "snapshot"):
            history = client.get_metric_history(run.info.run_id, f"eval/win_rate_vs_{opponent}")
            assert [m.step for m in history] == [19, 39] and all(0 <= m.value <= 1 for m in history)
            # the interval is a metric family of its own (eval/ charts stay one section in the MLflow UI).
            # An interval of 0 means every pair tied: EGPO's policy is still ~96% invalid after 40 steps (its
            # measured game/invalid_mass), and two invalid responses tie; SPPO's (42% invalid) cannot all tie
            assert 0 <= run.data.metrics[f"eval_ci95/win_rate_vs_{opponent}"] < 1
            assert f"eval/win_rate_vs_{opponent}/ci95" not in run.data.metrics
            if run.data.tags["algo"] == "sppo":
                assert run.data.metrics[f"eval_ci95/win_rate_vs_{opponent}"] > 0
        assert run.data.metrics["eval_ci95/pairs"] == 4 * 2  # the token game's 4 prompts × eval.samples=2
        with open(client.download_artifacts(run.info.run_id, "completions.json", str(tmp_path))) as f:
            table = json.load(f)
        assert table["columns"] == ["step", "prompt", "opponent", "policy_response", "valid", "opponent_response",
                                    "opponent_valid", "p_policy_wins", "chosen"]
        rows = [dict(zip(table["columns"], row)) for row in table["data"]]
        # 2 evaluations × 2 opponents × 8 pairs (all of them: 4 prompts × 2 samples), the newest first
        assert [row["step"] for row in rows] == [40] * 16 + [20] * 16
        assert {row["prompt"] for row in rows} <= {"say 0", "say 1", "say 2", "say 3"}
        assert all(row["chosen"] == ("tie" if row["p_policy_wins"] == 0.5 else "policy" if row["p_policy_wins"] > 0.5
                                     else row["opponent"]) for row in rows)
        # valid: one of the game's responses ("0".."3" words, see lit_nash/games/token.py); two invalid ones tie
        assert all(isinstance(row["valid"], bool) and isinstance(row["opponent_valid"], bool) for row in rows)
        assert all(row["chosen"] == "tie" for row in rows if not row["valid"] and not row["opponent_valid"])
        assert all(row["chosen"] == "policy" for row in rows if row["valid"] and not row["opponent_valid"])


def test_periodic_evaluation_does_not_change_the_training_run(tmp_path):
    """Evaluation samples under a forked RNG: the run's own samples, hence its metrics, are unchanged."""
    done = run_cli("fit", "-m", "rollout=sampled", "algo=online_ipo", "algo.k=8", "policy.optimizer.lr=0.05",
                   "trainer.max_steps=30", "trainer.enable_progress_bar=false", "eval.every_n_steps=0,10", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlruns.db")
    off, on = client.search_runs([client.get_experiment_by_name("lit_nash").experiment_id], "tags.algo != ''",
                                 order_by=["attributes.start_time ASC"])
    assert "eval/win_rate_vs_ref" in on.data.metrics and "eval/win_rate_vs_ref" not in off.data.metrics
    for name in ("game/duality_gap", "train/loss"):
        history = [[(m.step, m.value) for m in client.get_metric_history(run.info.run_id, name)] for run in (off, on)]
        logged = {0, 9, 19, 29} if name == "train/loss" else {9, 19, 29}  # the loss also at the first step
        assert history[0] == history[1] and {step for step, _ in history[0]} == logged

    # eval of tabular policies: identical policies, so every exact win rate is ½. Its default out is a
    # folder of its own under eval/; no run folder (outputs/DATE/TIME is a fit run's), no .hydra/ or eval.log
    done = run_cli("eval", "samples=64", "log_experiment=null", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    (folder,) = (tmp_path / "eval").glob("*/*")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval", "mlruns", "mlruns.db", "mlruns.db.lock", "multirun"]
    assert f"wrote {folder}/table.md" in done.stdout
    r = load_result(folder)
    assert r["policies"] == ["online_ipo-comal_cycle-seed0", "online_ipo-comal_cycle-seed0_2"]
    check_matrix(r, 2)
    np.testing.assert_allclose(r["exact_win_rate"], 0.5, atol=1e-12)


def test_eval_of_text_policies_under_their_preference_model(text_models, tmp_path):
    overrides = ["task=text", "algo=egpo,online_ipo", f"data.path={text_models['plain']}",
                 f"policy.model_path={text_models['policy']}", f"preference.path={text_models['pairwise']}",
                 "rollout.prompts_per_step=2", "policy.max_new_tokens=6", "trainer.max_steps=4",
                 "trainer.enable_progress_bar=false"]
    done = run_cli("fit", "-m", *overrides, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    done = run_cli("eval", "samples=4", f"out={tmp_path}/eval", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    r = load_result(tmp_path / "eval")
    assert r["policies"] == ["egpo-prompts-seed0", "online_ipo-prompts-seed0"] and r["pairs"] == 4 * 4
    assert r["preference"] == "lit_nash.preference.PairwiseClassifier" and "exact_win_rate" not in r
    check_matrix(r, 2)
    assert all(0 <= v <= 1 for v in r["win_rate_vs_ref"])


def test_eval_names_a_bad_policy(tmp_path):
    import torch

    torch.save({"state_dict": {}}, tmp_path / "plain.ckpt")
    mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlruns.db").create_experiment("lit_nash")  # a real, empty store
    for policy, message in [
        ("missing/model.ckpt", "does not exist"),
        ("0123456789abcdef", "neither a checkpoint file nor a run id"),
        ("plain.ckpt", "holds no run config: it was not written by `python -m lit_nash fit`"),
    ]:
        done = run_cli("eval", f"policies=[{policy}]", cwd=tmp_path)
        assert done.returncode != 0 and message in done.stderr, (policy, done.stderr[-2000:])
    done = run_cli("eval", cwd=tmp_path)  # no policies given, and no finished run in the experiment
    assert done.returncode != 0 and "no finished run with a checkpoint in experiment 'lit_nash'" in done.stderr


def test_eval_holds_one_policy_at_a_time_and_only_its_reference(token_runs):
    """A player keeps only the reference snapshot (EGPO's half step, SPPO's rounds are freed at load) and its
    network is gone once it has sampled: the next policy loads into the memory it left."""
    import gc
    import weakref

    import torch

    from lit_nash.eval import load_player, play_out
    from lit_nash.build import build_preference

    cwd, _client, runs = token_runs
    egpo = next(r for r in runs if r.data.tags["algo"] == "egpo")
    player = load_player(egpo.info.run_id, f"sqlite:///{cwd}/mlruns.db")
    assert player.policy.snapshot_names() == ["ref"]
    network = weakref.ref(player.policy)
    preference = build_preference(player.config.preference, player.game, player.config.preference.get("_target_"))
    play_out(player, preference, torch.device("cpu"), torch.arange(4), n=3, batch_size=2)
    gc.collect()
    assert network() is None and player.policy is None
    assert [r.shape[:2] for r in player.own] == [(2, 3), (2, 3)] == [r.shape[:2] for r in player.ref]
    assert player.reader is not None and player.log_probs.shape == player.ref_log_probs.shape == (4, 13)
