"""The engine: the rollout of step t is made with the parameters after step t − 1 (never a step stale, even
though Lightning fetches a batch ahead), one training step is one optimizer step for every algorithm, and a
round's rollout carries π_t's log-probs from the first forward into its later epochs."""

from functools import partial

import lightning as L
import pytest
import torch

from lit_nash.algorithms import EGPO, MPO, SPPO
from lit_nash.build import assemble
from lit_nash.engine import RolloutDataModule
from lit_nash.games import comal_cycle
from lit_nash.generation import TabularSampler
from lit_nash.policy import TabularPolicy
from lit_nash.preference import GameOracle


class RecordingSampler(TabularSampler):
    """The tabular sampler, remembering the policy's live logits and each group's distribution when it samples."""

    def __init__(self, network):
        super().__init__(network)
        self.seen, self.sources = [], []

    def generate(self, prompt, groups, return_log_probs=False):
        self.seen.append(self.network.logits.detach().clone())
        self.sources.append({g.source: self.network.source_log_probs(g.source).detach().clone() for g in groups})
        return super().generate(prompt, groups, return_log_probs)


class AfterStep(L.Callback):
    def __init__(self):
        self.after = []

    def on_train_batch_end(self, trainer, pl_module, *args):
        self.after.append(pl_module.network.logits.detach().clone())


def train(algorithm, steps, data=None, record_first=False):
    L.seed_everything(0, verbose=False)
    game = comal_cycle()
    network = TabularPolicy(game=game)
    sampler = RecordingSampler(network)
    run = assemble(network, algorithm, GameOracle(game), data, optimizer=partial(torch.optim.SGD, lr=0.1),
                   generator=sampler)
    after = AfterStep()
    trainer = L.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[after, algorithm] if record_first else [algorithm, after])
    start = network.logits.detach().clone()
    trainer.fit(run.policy, datamodule=run.data)
    train.sampler = sampler
    return start, sampler.seen, after.after, trainer


def test_the_samples_of_step_t_come_from_the_parameters_after_step_t_minus_1():
    start, seen, after, trainer = train(MPO(k=2), steps=6)
    assert len(seen) == len(after) == trainer.global_step == 6
    assert torch.equal(seen[0], start)
    for t in range(1, 6):
        assert torch.equal(seen[t], after[t - 1]), f"step {t} sampled from stale parameters"
        assert not torch.equal(after[t], after[t - 1])  # the policy did move


def test_egpo_takes_one_optimizer_step_per_training_step_and_samples_its_half_step():
    """Step 2i is the half step from θ_t; step 2i+1 starts again at θ_t and samples y, y', y'' from θ_{t+½}."""
    algo = EGPO(k=8)
    start, seen, after, trainer = train(algo, steps=4, record_first=True)  # ``after`` sees θ_{t+½} before the restore
    assert trainer.global_step == 4 and algo.step == 2 and len(after) == 4  # two iterations of two optimizer steps
    sources = train.sampler.sources
    assert list(sources[0]) == ["policy"] and list(sources[1]) == ["half_step"]
    assert torch.equal(seen[1], start)  # back at θ_t for the second call ...
    assert torch.equal(sources[1]["half_step"], torch.log_softmax(after[0], -1))  # ... which samples θ_{t+½}
    assert not torch.equal(after[0], start)
    assert torch.equal(seen[2], after[1])  # the next iteration starts at θ_{t+1}


def test_a_round_reuses_its_rollout_with_the_log_probs_of_its_first_forward():
    data = RolloutDataModule(1, epochs_per_round=3)
    algo = SPPO(k=4)
    start, seen, after, trainer = train(algo, steps=6, data=data)
    assert len(seen) == 2  # one rollout per round of 3 steps
    assert torch.equal(seen[1], after[2])
    rollout = data.round
    pi_t = torch.log_softmax(after[2], -1)[rollout.prompt.unsqueeze(-1), rollout.responses]
    torch.testing.assert_close(rollout.policy_logp, pi_t, rtol=0, atol=1e-12)


def test_max_steps_completes_the_last_iteration():
    _, _, after, trainer = train(EGPO(k=2), steps=3)
    assert trainer.global_step == 4 and len(after) == 4
