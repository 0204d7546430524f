"""The progress bars of ``lit_nash.progress`` on a max-steps run (issue 17.2): optimizer steps out of
max_steps and no epoch, both the rich bar and the tqdm one; round-off below 0 of a gap shows as 0."""

from functools import partial

import lightning as L
import pytest
import torch

from lit_nash.algorithms import MPO
from lit_nash.build import assemble
from lit_nash.games import comal_cycle
from lit_nash.metrics import GameMetrics
from lit_nash.policy import TabularPolicy
from lit_nash.preference import GameOracle
from lit_nash.progress import STEPS, RichGapBar, TQDMGapBar, speed
from lit_nash.tracking import shown, summary_line


@pytest.mark.parametrize("bar_type", [RichGapBar, TQDMGapBar])
def test_the_bar_counts_optimizer_steps_out_of_max_steps(bar_type, tmp_path):
    game = comal_cycle()
    run = assemble(TabularPolicy(game=game), MPO(), GameOracle(game), sampled=False, game=game)
    bar = bar_type()
    trainer = L.Trainer(max_steps=7, logger=False, enable_checkpointing=False, enable_model_summary=False,
                        default_root_dir=tmp_path, log_every_n_steps=1, callbacks=[run.algorithm, run.metrics, bar])
    trainer.fit(run.policy, datamodule=run.data)
    if bar_type is RichGapBar:
        (task,) = bar.progress.tasks
        assert (task.description, task.completed, task.total) == (STEPS, 7, 7)
    else:
        assert (bar.train_progress_bar.desc, bar.train_progress_bar.n, bar.train_progress_bar.total) == (f"{STEPS}: ", 7, 7)
    assert "Epoch" not in str(bar.get_metrics(trainer, run.policy))


def test_round_off_below_zero_of_a_non_negative_metric_shows_as_zero():
    assert shown("game/kl_to_ne", -5.55e-17) == 0.0 and shown("duality_gap", -1e-9) == 0.0
    assert shown("game/exploitability", -0.3) == -0.3  # not round-off: shown as it is
    assert shown("train/loss", -5.55e-17) == -5.55e-17  # a loss may be negative
    line = summary_line({"algo": "mpo", "game": "g", "seed": "0"}, 10, 1.0,
                        {"game/kl_to_ne": -5.55e-17, "train/loss": -0.5}, None, None)
    assert "game/kl_to_ne=0 " in line and "train/loss=-0.5" in line


def test_the_summary_line_gives_the_pairs_beside_the_evaluation_interval():
    """16 pairs that all win read 1.000 ± 0.000: the line says how many pairs that rests on."""
    import torch

    from lit_nash.evaluation import WinRate

    rates = {"ref": WinRate.of(torch.ones(4, 4)), "snapshot": WinRate.of(torch.tensor([0.0, 1.0] * 8))}
    line = summary_line({"algo": "egpo", "data": "prompts", "seed": "0"}, 6, 1.0, {"train/loss": 0.5}, None, None, rates)
    assert line.endswith("| train/loss=0.5 | eval/win_rate_vs_ref=1.000 ± 0.000 (16 pairs) "
                         "eval/win_rate_vs_snapshot=0.500 ± 0.253 (16 pairs)")


def test_the_bar_names_each_phase_of_a_step_and_of_the_periodic_evaluation(tmp_path):
    """A sampled LM run (online IPO on the token game, with periodic evaluation): the bar's description names the
    step's phases as they happen, nested under eval for the evaluation's sampling, and is plain again at the end."""
    import lightning as L

    from lit_nash.algorithms import OnlineIPO
    from lit_nash.evaluation import PeriodicEval
    from lit_nash.games.token import token_game
    from lit_nash.models import tiny_causal_lm
    from lit_nash.policy.causal_lm import CausalLMPolicy
    from lit_nash.preference.token_game import TokenGameOracle

    game = token_game()
    path = tiny_causal_lm(tmp_path / "lm", game.vocabulary())
    run = assemble(CausalLMPolicy(str(path), game=game, max_new_tokens=3), OnlineIPO(k=2), TokenGameOracle(game, path),
                   game=game, optimizer=partial(torch.optim.AdamW, lr=0.01),
                   evaluation=PeriodicEval(every_n_steps=2, prompts=2, samples=2))
    bar = TQDMGapBar()
    trainer = L.Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_model_summary=False,
                        default_root_dir=tmp_path, callbacks=[run.algorithm, run.evaluation, bar])
    watched = bar.watch(trainer.profiler)
    shown_phases, report = [], watched.on_change
    watched.on_change = lambda phases: (report(phases), shown_phases.append(bar.train_progress_bar.desc))
    trainer.profiler = run.rollouts.profiler = watched
    trainer.fit(run.policy, datamodule=run.data)
    for phase in ("generate", "judge", "score", "update", "eval", "eval › generate", "eval › judge"):
        assert f"{STEPS} · {phase}: " in shown_phases, (phase, sorted(set(shown_phases)))
    assert shown_phases.index(f"{STEPS} · generate: ") < shown_phases.index(f"{STEPS} · update: ")
    assert bar.train_progress_bar.desc == f"{STEPS}: " and bar.step_seconds > 0


def test_a_slow_step_is_shown_in_seconds_per_step():
    assert speed(41.26) == "41.3s/step" and speed(0.004) == "250.00it/s" and speed(None) == "-"


def test_rollout_statistics_of_a_step():
    """Lengths count the tokens up to and including the first EOS; a response without EOS hit the token limit."""
    from lit_nash.rollout import Rollout
    from lit_nash.rollout_metrics import rollout_stats

    eos, pad = 2, 0
    policy = torch.tensor([[[5, 2, 0, 0], [5, 6, 7, 8]], [[2, 0, 0, 0], [5, 6, 2, 0]]])  # lengths 2, 4 (cut), 1, 3
    opponent = torch.full_like(policy, pad)
    rollout = Rollout(prompt=torch.arange(2), responses=policy, p=torch.tensor([[0.9, 0.2], [0.5, 0.6]]),
                      samples={"policy": policy, "opponent": opponent})
    assert rollout_stats(rollout, eos) == {"train/p_vs_opponent": pytest.approx(0.55), "train/response_tokens": 2.5,
                                           "train/truncated": 0.25}
    self_play = Rollout(prompt=torch.arange(2), responses=policy, p=torch.tensor([[0.9], [0.4]]), samples={"policy": policy})
    assert "train/p_vs_opponent" not in rollout_stats(self_play, eos)  # no opponent: P = 1/2 by symmetry


def test_a_short_text_run_logs_its_first_and_last_step_and_prints_them(text_models, tmp_path):
    """A 3-step text run with task=text's log_every_n_steps (10) logs train/loss and the rollout statistics at
    steps 0 and 2, and its summary line shows the last step's (it was empty)."""
    from mlflow import MlflowClient

    from tests.cli import run_cli

    out = run_cli("fit", "task=text", f"data.path={text_models['plain']}", f"policy.model_path={text_models['policy']}",
                  f"preference.path={text_models['pairwise']}", "rollout.prompts_per_step=2", "policy.max_new_tokens=4",
                  "trainer.max_steps=3", "trainer.enable_progress_bar=false", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns.db")
    (run,) = client.search_runs([client.get_experiment_by_name("lit_nash").experiment_id])
    names = ("train/loss", "train/p_vs_opponent", "train/response_tokens", "train/truncated")
    for name in names:
        assert [m.step for m in client.get_metric_history(run.info.run_id, name)] == [0, 2], name
    summary = out.stdout.strip().splitlines()[-1]
    last = {name: client.get_metric_history(run.info.run_id, name)[-1].value for name in names}
    assert " | train/loss=" in summary and all(f"{n}={last[n]:.3g}" in summary for n in names), summary

def test_the_summary_line_shows_the_average_iterate_and_says_when_the_claim_is_about_it():
    final = {"game/duality_gap": 0.5, "game/reg_duality_gap": 0.4, "game/avg_duality_gap": 0.01,
             "game/avg_reg_duality_gap": 0.02, "game/avg_kl_to_ne": 0.03}
    last = summary_line({"algo": "mpo", "game": "g", "seed": "0", "iterate": "last"}, 10, 1.0, final, None, None)
    assert "game/avg_duality_gap=0.01" in last and "avg_reg" not in last and "avg_kl" not in last
    assert "converges on average" not in last
    average = summary_line({"algo": "sppo", "game": "g", "seed": "0", "iterate": "average"}, 10, 1.0, final, None, None)
    assert "sppo converges on average: read game/avg_duality_gap" in average
