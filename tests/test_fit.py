"""``python -m lit_nash fit`` end to end: the real CLI, Lightning Trainer and MLflow store, on exact games."""

import re

import pytest
import torch
import yaml
from mlflow import MlflowClient

from lit_nash.algorithms import MPO
from lit_nash.games import duality_gap, egpo_random
from lit_nash.algorithms.simulate import simulate
from lit_nash.policy import reference_logits

from .cli import run_cli


def runs(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}")
    experiment = client.get_experiment_by_name("lit_nash")
    return client, client.search_runs([experiment.experiment_id], "tags.algo != ''")  # not a sweep's own run


def last(client, run, key):
    history = client.get_metric_history(run.info.run_id, key)
    return max(history, key=lambda m: m.step)


def test_fit_mpo_reaches_the_equilibrium_and_is_readable_from_mlflow(tmp_path):
    out = run_cli("fit", "algo=mpo", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = [line for line in out.stdout.splitlines() if line.startswith("lit_nash fit:")]
    assert len(summary) == 1 and "mlflow ui --backend-store-uri sqlite:///" in summary[0]

    client, (run,) = runs(tmp_path)
    assert run.info.status == "FINISHED"
    assert run.data.tags["algo"] == "mpo" and run.data.tags["game"] == "comal_cycle" and run.data.tags["seed"] == "0"
    assert run.data.params["algo.magnet_every"] == "100" and run.data.params["trainer.max_steps"] == "2000"
    gap = last(client, run, "game/duality_gap")
    assert gap.step == 1999 and gap.value < 1e-6
    first = min(client.get_metric_history(run.info.run_id, "game/duality_gap"), key=lambda m: m.step)
    assert first.value > 1e-2  # it fell
    for key in ("game/reg_duality_gap", "game/exploitability", "game/kl_to_ne"):
        assert last(client, run, key).step == 1999
    assert re.search(r"game/duality_gap=(\S+)", summary[0]).group(1) == f"{gap.value:.3g}"


def test_default_fit_prints_the_bar_and_the_summary_and_logs_the_rest(tmp_path):
    """`python -m lit_nash fit` in an empty folder (issue 17): the terminal gets the progress bar (its last
    frame: not a terminal here) and the summary line, once each; Lightning's and MLflow's INFO lines, the
    litlogger advert, "Experiment ... not found" and third-party deprecation warnings go to fit.log or
    nowhere. fit.log ends with the summary line."""
    out = run_cli("fit", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    terminal = [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]
    assert len(terminal) == len(set(terminal)), terminal  # no line twice
    assert len(terminal) <= 4, terminal  # the bar (two lines at 80 columns) and the summary
    text = "\n".join(terminal)
    for noise in ("litlogger", "Tip:", "not found", "GPU available", "Trainer.fit", "INFO", "deprecated",
                  "Warning", "database tables"):
        assert noise not in text, (noise, terminal)
    (summary,) = [line for line in terminal if line.startswith("lit_nash fit: mpo on comal_cycle")]
    assert "2000 steps" in summary
    (log,) = (tmp_path / "outputs").rglob("fit.log")
    logged = log.read_text()
    assert logged.rstrip().endswith(summary) and "GPU available" in logged and ("not found. Creating it." in logged or "Creating initial MLflow database tables" in logged)
    # the bar counts optimizer steps out of max_steps; a max-steps run has no epochs to show
    bar = text.split("lit_nash fit:")[0]
    assert "Steps" in bar and "2000/2000" in bar and "Epoch" not in bar


def test_a_token_game_fit_prints_no_transformers_progress_bars(tmp_path):
    """A token-game run builds, saves and loads a tiny causal LM (and evaluates, with eval on): the terminal
    gets the bar and the summary line only, not transformers' "Writing model shards" / "Loading weights"
    bars nor its deprecation warnings."""
    out = run_cli("fit", "task=token_game", "trainer.max_steps=5", "eval.every_n_steps=5", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    terminal = [line for line in (out.stdout + out.stderr).replace("\r", "\n").splitlines() if line.strip()]
    assert len(terminal) == len(set(terminal)), terminal
    assert len(terminal) <= 4, terminal
    text = "\n".join(terminal)
    for noise in ("Writing model shards", "Loading weights", "it/s]", "%|", "deprecated", "Warning", "INFO"):
        assert noise not in text, (noise, terminal)
    (summary,) = [line for line in terminal if line.startswith("lit_nash fit: mpo on token_game (seed 0), 5 steps")]
    assert "eval/" in summary


def test_the_mlflow_run_page_has_the_config_log_checkpoint_and_tags_and_no_epoch(tmp_path):
    """Issue 17.3, on a real sqlite store: each run logs its resolved config (config.yaml), its log file
    (fit.log, ending with the summary) and its small final checkpoint as artifacts; no `epoch` metric on a
    max-steps run; the tags task, rollout, target, responses and, under -m, sweep and sweep_job; the
    preference queries of exact play; two runs of the same settings get different names."""
    out = run_cli("fit", "-m", "seed=0,0", "trainer.max_steps=20", "trainer.enable_progress_bar=false", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    client, found = runs(tmp_path)
    assert len(found) == 2
    names = [r.info.run_name for r in found]
    assert len(set(names)) == 2 and all(re.fullmatch(r"mpo-comal_cycle-seed0-[0-9a-f]{6}", n) for n in names), names
    (sweep,) = (tmp_path / "multirun").glob("*/*")
    for run in found:
        run_id, tags = run.info.run_id, run.data.tags
        assert tags["task"] == "none" and tags["rollout"] == "exact"
        assert tags["target"] == "NE" and tags["responses"] == "3"  # MPO converges to the NE; the 3-cycle's size
        assert run.data.metrics["pref/queries"] == 20 * 3  # exact play: one evaluation of P·π a step, 3 pairs
        assert tags["sweep"] == str(sweep) and tags["sweep_job"] in ("0", "1")
        assert tags["checkpoint"] == str(sweep / tags["sweep_job"] / "checkpoints" / "last.ckpt")
        assert "epoch" not in run.data.metrics and not client.get_metric_history(run_id, "epoch")
        assert "game/duality_gap" in run.data.metrics
        artifacts = {a.path for a in client.list_artifacts(run_id)} | {a.path for a in client.list_artifacts(run_id, "checkpoints")}
        assert {"config.yaml", "fit.log", "checkpoints/last.ckpt"} <= artifacts, artifacts
        where = tmp_path / "download" / run_id
        config = yaml.safe_load(open(client.download_artifacts(run_id, "config.yaml", str(where.with_suffix(".c")))))
        assert config["trainer"]["max_steps"] == 20 and config["algo"]["_target_"] == "lit_nash.algorithms.mpo.MPO"
        log = open(client.download_artifacts(run_id, "fit.log", str(where))).read()
        assert "lit_nash fit: mpo on comal_cycle (seed 0), 20 steps" in log.splitlines()[-1]
        ckpt = torch.load(client.download_artifacts(run_id, "checkpoints/last.ckpt", str(where)), weights_only=True)
        assert ckpt["global_step"] == 20


def test_multirun_of_five_algorithms_matches_the_theory(tmp_path):
    """The issue's done-when: MPO and COMAL reach the original NE; EGPO and Nash-MP the regularized one
    (original gap 0.0245 at τ = 0.1); SPPO's last iterate cycles."""
    out = run_cli("fit", "-m", "algo=mpo,comal,egpo,nash_mp,sppo", cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    client, found = runs(tmp_path)
    final = {r.data.tags["algo"]: last(client, r, "game/duality_gap").value for r in found}
    reg = {r.data.tags["algo"]: last(client, r, "game/reg_duality_gap").value for r in found}
    assert sorted(final) == ["comal", "egpo", "mpo", "nash_mp", "sppo"]
    assert final["mpo"] < 1e-6 and final["comal"] < 1e-6
    assert final["egpo"] == pytest.approx(0.0245, abs=1e-4) and reg["egpo"] < 1e-10
    assert final["nash_mp"] == pytest.approx(0.0245, abs=1e-4) and reg["nash_mp"] < 1e-10
    assert final["sppo"] > 0.1


def test_lightning_loop_runs_exactly_the_closed_form_dynamics(tmp_path):
    """fit applies the algorithm's exact step through Lightning's optimizer loop, schedule included: its
    checkpoint holds the same iterate, magnet and step counter as ``simulate`` (to float64 round-off)."""
    out = run_cli(
        "fit", "algo=mpo", "algo.magnet_every=7", "game=egpo_random", "policy.reference=gaussian",
        "trainer.max_steps=50", "seed=3", cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    (ckpt_path,) = (tmp_path / "outputs").rglob("*.ckpt")
    ckpt = torch.load(ckpt_path, weights_only=True)
    P = egpo_random(num_actions=10, num_games=10, seed=3).P
    algo = MPO(eta=1.0, tau=0.1, magnet_every=7)
    sim = simulate(algo, P, 50, ref=reference_logits("gaussian", 10, 10, seed=3))
    state = ckpt["state_dict"]
    torch.testing.assert_close(torch.log_softmax(state["network.logits"], -1), sim.log_pi, rtol=0, atol=1e-12)
    assert ckpt["callbacks"]["MPO"] == {"step": 50}
    # the magnet was last refreshed after step 49 (= 7·7): it is the iterate of step 49, not 50
    sim49 = simulate(MPO(eta=1.0, tau=0.1, magnet_every=7), P, 49, ref=reference_logits("gaussian", 10, 10, seed=3))
    torch.testing.assert_close(state["network.snapshots.entries.magnet.log_probs"], sim49.log_pi, rtol=0, atol=1e-12)
    # the average iterate is the uniform mixture of the iterates after steps 1..50, kept in the checkpoint
    every = simulate(MPO(eta=1.0, tau=0.1, magnet_every=7), P, 50, ref=reference_logits("gaussian", 10, 10, seed=3),
                     record_every=1)
    average = ckpt["callbacks"]["GameMetrics"]
    assert average["count"] == 50
    torch.testing.assert_close(average["total"] / 50, every.trajectory[1:].exp().mean(0), rtol=0, atol=1e-12)
    client, (run,) = runs(tmp_path)
    logged = last(client, run, "game/avg_duality_gap")
    assert logged.step == 49
    assert logged.value == pytest.approx(duality_gap(P, every.trajectory[1:].exp().mean(0)).mean().item(), abs=1e-12)


def test_lightning_relaunch_keeps_the_subcommand(tmp_path):
    """Two CPU processes (DDP, gloo): Lightning re-runs ``python -m lit_nash.__main__ <argv>`` for rank 1,
    which no longer starts with ``fit``; the CLI's environment variable LIT_NASH_COMMAND, inherited, carries it."""
    out = run_cli("fit", "trainer.devices=2", "trainer.strategy=ddp", "trainer.max_steps=20", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    (rank1_log,) = (tmp_path / "outputs").rglob("train_ddp_process_1.log")
    assert rank1_log.exists()
    client, (run,) = runs(tmp_path)
    assert last(client, run, "game/duality_gap").step == 19


def test_sampled_play_on_the_tabular_policy_through_the_cli(tmp_path):
    """policy=tabular rollout=sampled: online IPO's practical loss on sampled responses with the shipped settings,
    the real CLI and store: the regularized gap falls 5× (measured 0.0068 → 0.0002 over 3000 steps, seed 0)."""
    out = run_cli("fit", "rollout=sampled", "algo=online_ipo", "trainer.max_steps=2000",
                  "trainer.enable_progress_bar=false", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    client, (run,) = runs(tmp_path)
    history = sorted(client.get_metric_history(run.info.run_id, "game/reg_duality_gap"), key=lambda m: m.step)
    assert history[-1].value < history[0].value / 5
