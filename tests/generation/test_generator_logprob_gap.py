"""``train/generator_logprob_gap`` without vLLM: a generator that reports its log-probs (here the hf generator,
flagged ``reports_log_probs`` as the vLLM generator is) has them matched to the rollout's responses, reduced
as the loss reduces them, and the engine logs their mean distance to the training model's. The hf generator
scores with the training model itself, so the gap is float round-off; a snapshot's samples are not matched."""

from functools import partial

import lightning as L
import torch

from lit_nash.algorithms.egpo import EGPO
from lit_nash.algorithms.online_ipo import OnlineIPO
from lit_nash.build import assemble
from lit_nash.engine import generator_logprob_gap
from lit_nash.games.token import token_game
from lit_nash.generation import HFGenerator, SamplingGroup
from lit_nash.models import tiny_causal_lm
from lit_nash.policy.causal_lm import CausalLMPolicy
from lit_nash.preference.token_game import TokenGameOracle
from lit_nash.rollout import Rollouts

GAME = token_game()
PROMPTS = torch.arange(GAME.num_prompts)


class Reporting(HFGenerator):
    reports_log_probs = True


def setup(tmp_path):
    path = tiny_causal_lm(tmp_path / "lm", GAME.vocabulary(), seed=0)
    policy = CausalLMPolicy(str(path), game=GAME, max_new_tokens=3)
    return policy, TokenGameOracle(GAME, str(path))


def test_the_reported_log_probs_are_matched_to_the_rollouts_responses(tmp_path):
    policy, oracle = setup(tmp_path)
    rollouts = Rollouts(policy, Reporting(policy), oracle)
    torch.manual_seed(0)
    for reduction in ("mean", "sum"):
        algo = OnlineIPO(k=2, logprob_reduction=reduction)
        with rollouts.recording() as generated:
            rollout = algo.rollout(rollouts, PROMPTS)
        assert rollouts.generated is None and len(generated) == 2  # the proposal pair and y'', both the policy's
        logp = rollouts.generator_log_probs(rollout, generated)
        exact = policy.response_log_probs(PROMPTS, rollout.responses, reduction=reduction)
        torch.testing.assert_close(logp, exact, rtol=0, atol=1e-5)
        rollout.generator_logp, rollout.policy_logp = logp, exact
        assert float(generator_logprob_gap(rollout)) < 1e-5
    policy.refresh_snapshot("half_step")
    with rollouts.recording() as generated:
        rollout = OnlineIPO(k=2).rollout(rollouts, PROMPTS, source="half_step")
    assert generated == [] and rollouts.generator_log_probs(rollout, generated) is None
    rollouts.sample(PROMPTS, [SamplingGroup(k=1)])  # outside a recording nothing is kept
    assert rollouts.generated is None


def test_a_fit_logs_the_gap_only_for_a_reporting_generator(tmp_path):
    logged = {}

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            logged.setdefault(type(pl_module.rollouts.generator).__name__, []).append(
                trainer.callback_metrics.get("train/generator_logprob_gap"))

    for generator in (Reporting, HFGenerator):
        policy, oracle = setup(tmp_path)
        algo = EGPO()
        run = assemble(policy, algo, oracle, generator=generator(policy), optimizer=partial(torch.optim.AdamW, lr=1e-3))
        trainer = L.Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, log_every_n_steps=1, callbacks=[algo, Record()])
        trainer.fit(run.policy, datamodule=run.data)
    first = logged["Reporting"][0]  # (step 2, EGPO's second call, samples its half step: nothing to match)
    assert first is not None and float(first) < 1e-4
    assert logged["HFGenerator"] == [None, None]
