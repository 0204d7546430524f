"""Issue 22.3: the cost axis of a run. ``pref/queries`` (pairs the preference model labeled for training, a
pair twice where the model reads both orders) and ``gen/tokens`` (tokens generated for training) are counted
by the ``Rollouts`` service, logged cumulatively to MLflow at every step whatever ``log_every_n_steps`` is,
kept in the checkpoint, and continue after a resume exactly as in an uninterrupted run."""

from functools import partial

import lightning as L
import pytest
import torch
from mlflow import MlflowClient

from lit_nash.algorithms import ALGORITHMS
from lit_nash.build import assemble, build_run
from lit_nash.engine import RolloutDataModule
from lit_nash.games import egpo_random
from lit_nash.mlflow_logger import MLFlowLogger
from lit_nash.policy import TabularPolicy
from lit_nash.policy.causal_lm import CausalLMPolicy
from lit_nash.preference import GameOracle, PairwiseClassifier
from lit_nash.rng import RNGCheckpoint

from .test_configs import compose_config

COUNTERS = ("pref/queries", "gen/tokens")


def mlflow_logger(tmp_path, name="run"):
    return MLFlowLogger(experiment_name="counters", run_name=name, tracking_uri=f"sqlite:///{tmp_path / 'mlruns.db'}",
                        log_epoch=False)


def history(logger, key):
    return [(m.step, m.value) for m in sorted(MlflowClient(logger._tracking_uri).get_metric_history(logger.run_id, key),
                                              key=lambda m: m.step)]


@pytest.mark.parametrize("name", ["comal", "online_ipo", "nash_md"])
def test_the_counters_are_the_pairs_labeled_and_the_tokens_generated_every_step(name, tmp_path):
    """A tiny GPT-2 on the token game with the algorithm's defaults, 4 steps, log_every_n_steps 3: MLflow has
    both counters at steps 0..3, and they are the running totals of what the preference oracle was asked
    (pairs) and what the generator returned (tokens up to and including the first EOS), counted here on the
    oracle and the generator themselves."""
    cfg = compose_config("fit", ["task=token_game", f"algo={name}", f"output_dir={tmp_path}"])
    L.seed_everything(0, verbose=False)
    run = build_run(cfg)
    asked, generated = [0], [0]
    prob, generate = run.preference.prob, run.generator.generate

    def counted_prob(prompt, a, b):
        asked[0] += a.shape[:2].numel()
        return prob(prompt, a, b)

    def counted_generate(prompt, groups, return_log_probs=False):
        out = generate(prompt, groups, return_log_probs)
        generated[0] += sum(int(run.network.response_mask(s.responses.flatten(0, 1)).sum()) for s in out)
        return out

    run.preference.prob, run.generator.generate = counted_prob, counted_generate
    totals = []

    class Totals(L.Callback):
        def on_train_batch_end(self, *args):
            totals.append((float(asked[0]), float(generated[0])))

    logger = mlflow_logger(tmp_path)
    trainer = L.Trainer(max_steps=4, logger=logger, log_every_n_steps=3, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                        callbacks=[run.algorithm, Totals()])
    trainer.fit(run.policy, datamodule=run.data)
    queries, tokens = history(logger, "pref/queries"), history(logger, "gen/tokens")
    assert [s for s, _ in queries] == [s for s, _ in tokens] == [0, 1, 2, 3]
    assert [(q, t) for (_, q), (_, t) in zip(queries, tokens)] == totals
    assert totals[0][0] > 0 and totals[-1][1] > totals[0][1]
    assert [s for s, _ in history(logger, "train/loss")] == [2]  # the third step: the counters' step axis


def test_a_model_that_reads_both_orders_counts_two_queries_a_pair(text_models):
    """The pairwise classifier asks p(a, b) and p(b, a) for each pair: two queries (an exact oracle, one)."""
    policy = CausalLMPolicy(text_models["policy"], prompts=["hello", "big cat"], max_new_tokens=4)
    preference = PairwiseClassifier(text_models["pairwise"])
    run = assemble(policy, ALGORITHMS["online_ipo"](k=3, variant=2), preference)
    responses = torch.tensor([[[5, policy.eos_id]] * 6] * 2)
    with run.rollouts.counting() as new:
        run.rollouts.label(torch.arange(2), responses[:, :3], responses[:, 3:])
    assert preference.reads_both_orders and new["pref/queries"] == 2 * 2 * 3
    assert run.rollouts.tokens(responses) == 2 * 6 * 2 and new["gen/tokens"] == 0  # labeling generates nothing


def build(steps, tmp_path, name):
    game = egpo_random(num_actions=5, num_games=4, seed=0)
    algo = ALGORITHMS["inpo"](k=4)
    data = RolloutDataModule(game.num_prompts, prompts_per_step=3, epochs_per_round=2)
    run = assemble(TabularPolicy(game.num_prompts, game.num_actions), algo, GameOracle(game), data,
                   optimizer=partial(torch.optim.SGD, lr=0.05))
    logger = mlflow_logger(tmp_path, name)
    trainer = L.Trainer(max_steps=steps, logger=logger, log_every_n_steps=5, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, callbacks=[algo, RNGCheckpoint()])
    return run, trainer, logger


def test_a_resumed_run_continues_the_counters(tmp_path):
    """INPO in rounds of 2 steps (a round's second step adds nothing), stopped after step 3, mid-round: the
    resumed run logs at steps 3..7 exactly what the uninterrupted run logged there."""
    L.seed_everything(0, verbose=False)
    run, trainer, full = build(8, tmp_path, "full")
    trainer.fit(run.policy, datamodule=run.data)
    uninterrupted = {key: history(full, key) for key in COUNTERS}
    assert [v for _, v in uninterrupted["pref/queries"]] == [18.0, 18.0, 36.0, 36.0, 54.0, 54.0, 72.0, 72.0]

    L.seed_everything(0, verbose=False)
    run, trainer, _ = build(3, tmp_path, "first")
    trainer.fit(run.policy, datamodule=run.data)
    trainer.save_checkpoint(tmp_path / "mid.ckpt")
    L.seed_everything(7, verbose=False)
    run, trainer, resumed = build(8, tmp_path, "second")
    trainer.fit(run.policy, datamodule=run.data, ckpt_path=tmp_path / "mid.ckpt")
    for key in COUNTERS:
        assert history(resumed, key) == uninterrupted[key][3:], key
    assert run.rollouts.counts == {k: int(uninterrupted[k][-1][1]) for k in COUNTERS}


def test_exact_play_counts_the_pairs_each_evaluation_of_the_win_rates_reads(tmp_path):
    """Exact play asks the preference model too: each evaluation of the exact win rates P·π reads the K(K − 1)/2
    pairs of every prompt (P(y' ≻ y) = 1 − P(y ≻ y'), the diagonal ½). EGPO's two calls a step on EGPO's 10
    random 10×10 games: 2 × 10 × 45 = 900 queries a step, counted here on the oracle itself, logged every step,
    no tokens; the totals are in the checkpoint's state."""
    cfg = compose_config("fit", ["algo=egpo", "game=egpo_random", f"output_dir={tmp_path}"])
    run = build_run(cfg)
    calls, win_rates = [], run.preference.win_rates

    def counted(log_pi):
        calls.append(log_pi.shape)
        return win_rates(log_pi)

    run.preference.win_rates = counted
    logger = mlflow_logger(tmp_path)
    trainer = L.Trainer(max_steps=3, logger=logger, log_every_n_steps=2, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", callbacks=[run.algorithm])
    trainer.fit(run.policy, datamodule=run.data)
    assert calls == [(10, 10)] * 6  # two calls per step
    assert history(logger, "pref/queries") == [(0, 900.0), (1, 1800.0), (2, 2700.0)]
    assert history(logger, "gen/tokens") == [(0, 0.0), (1, 0.0), (2, 0.0)]
    assert run.data.state_dict()["counts"] == {"pref/queries": 2700, "gen/tokens": 0}  # in the checkpoint
