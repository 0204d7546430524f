"""Gradient accumulation inside a step (``policy.micro_batches``): a step split into slices of its prompts
gives the full batch's gradient for every algorithm, weighted losses included (issue 22.5: each slice
normalized by its own weights; issue 23.2: COMAL's rollout could not be split at all); ``auto`` packs the
prompts into a memory budget by the policy's estimate, which bounds the peak torch's profiler measures."""

from functools import partial

import lightning as L
import pytest
import torch

from lit_nash.algorithms import ALGORITHMS
from lit_nash.build import assemble
from lit_nash.engine import PolicyModule, RolloutDataModule
from lit_nash.games import egpo_random
from lit_nash.games.token import token_game
from lit_nash.models import tiny_causal_lm
from lit_nash.policy import TabularPolicy
from lit_nash.policy.causal_lm import CausalLMPolicy
from lit_nash.preference import GameOracle

from .test_scoring_cost import peak_bytes

PROMPTS = 4


class Batches(L.Callback):
    def __init__(self):
        self.batches = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.batches.append(batch)


def step_update(algo, micro_batches, seed=0, **training):
    """θ_0 − θ after one iteration of SGD with lr 1 (the summed gradients of its steps) on 4 random games, and
    the rollouts. Prompt 3's policy puts all its mass on one action, so its samples are one response: a pair
    selection gives a pair of a response with itself, which the weighted losses drop (weight 0)."""
    L.seed_everything(seed, verbose=False)
    game = egpo_random(num_actions=4, num_games=PROMPTS, seed=1)
    network = TabularPolicy(game=game)
    logits = torch.randn(PROMPTS, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    logits[3] = torch.tensor([40.0, 0.0, 0.0, 0.0])
    network.set_logits(torch.log_softmax(logits, -1))
    run = assemble(network, algo, GameOracle(game), RolloutDataModule(PROMPTS),
                   optimizer=partial(torch.optim.SGD, lr=1.0), micro_batches=micro_batches, **training)
    start, batches = network.logits.detach().clone(), Batches()
    trainer = L.Trainer(max_steps=algo.steps_per_iteration(True), logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[algo, batches])
    trainer.fit(run.policy, datamodule=run.data)
    step_update.policy = run.policy
    return start - network.logits.detach(), batches.batches


WEIGHTED = {  # the paper's selected pair with its constant target: the filtered pairs get weight 0
    "inpo": dict(pairs="tournament", target="constant"),
    "comal": dict(pairs="top2", target="constant"),
    "mnpo": dict(pairs="best_worst", target="constant"),
}


@pytest.mark.parametrize("name", sorted(WEIGHTED))
def test_micro_batches_of_a_weighted_loss_give_the_full_batch_gradient(name):
    """Four pairs, one dropped: with each slice normalized by its own weights, two slices gave an update off by
    0.167 against an update of 0.333; with the weights scaled over the whole step, they give the same one."""
    full, (rollout,) = step_update(ALGORITHMS[name](**WEIGHTED[name]), 1)
    assert rollout.weight.flatten().tolist() == [4 / 3, 4 / 3, 4 / 3, 0.0]  # mean 1: Σ w·err / Σ w as a mean
    assert full.abs().max() > 0.1
    for micro_batches in (2, 3, 4):
        accumulated, _ = step_update(ALGORITHMS[name](**WEIGHTED[name]), micro_batches)
        torch.testing.assert_close(accumulated, full, rtol=0, atol=1e-14, msg=f"micro_batches={micro_batches}")


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_every_algorithm_accumulates_to_the_full_batch(name):
    """Each algorithm with its defaults, one prompt per micro-batch (COMAL's all-pairs rollout used to fail
    here with an IndexError in Rollout.select): the same update as one pass, to float64 rounding."""
    full, _ = step_update(ALGORITHMS[name](), 1)
    assert full.abs().max() > 1e-3, "the iteration moved the policy"
    accumulated, _ = step_update(ALGORITHMS[name](), PROMPTS)
    torch.testing.assert_close(accumulated, full, rtol=0, atol=1e-13)


def test_auto_packs_the_prompts_into_the_budget_with_the_full_batch_gradient():
    """``micro_batches=auto``: consecutive prompts while their estimated scoring memory fits the budget (here
    two COMAL prompts of five responses), the same update as one pass; a budget below one prompt gives each
    prompt its own slice, with a warning that says why."""
    full, _ = step_update(ALGORITHMS["comal"](), 1)
    row = float(step_update.policy.network.scoring_bytes(torch.arange(1), torch.zeros(1, 5, dtype=torch.long))[0])
    auto, _ = step_update(ALGORITHMS["comal"](), "auto", memory_budget_gb=2.5 * row / 1e9)
    assert step_update.policy.used_micro_batches == 2
    torch.testing.assert_close(auto, full, rtol=0, atol=1e-13)
    with pytest.warns(UserWarning, match=r"one prompt's 5 responses need an estimated .* GB to score"):
        auto, _ = step_update(ALGORITHMS["comal"](), "auto", memory_budget_gb=0.5 * row / 1e9)
    assert step_update.policy.used_micro_batches == PROMPTS
    torch.testing.assert_close(auto, full, rtol=0, atol=1e-13)


@pytest.mark.parametrize("micro_batches, budget, message", [
    ("auto", None, "policy.micro_batches=auto splits each step to fit policy.memory_budget_gb, which is null"),
    (2, 4.0, "policy.memory_budget_gb=4.0 is read only with policy.micro_batches=auto"),
    ("some", None, "policy.micro_batches must be an integer >= 1 or auto, got 'some'"),
    (0, None, r"policy.micro_batches must be an integer >= 1 \(or auto\), got 0"),
    ("auto", -1, "policy.memory_budget_gb must be > 0, got -1"),
])
def test_micro_batch_settings_are_checked(micro_batches, budget, message):
    with pytest.raises(ValueError, match=message):
        PolicyModule(TabularPolicy(1, 3), ALGORITHMS["comal"](), micro_batches=micro_batches, memory_budget_gb=budget)


@pytest.mark.parametrize("checkpointing", [False, True])
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_the_memory_estimate_bounds_the_measured_peak(arch, checkpointing, tmp_path):
    """``CausalLMPolicy.scoring_bytes`` against torch's memory profiler, scoring 4 prompts × 8 responses of 40
    tokens with grad, forward and backward, on tiny GPT-2 and Llama models: above the peak, by at most 30%
    (measured 6–23%)."""
    game = token_game()
    path = tiny_causal_lm(tmp_path / "lm", game.vocabulary(), arch=arch, max_positions=64)
    policy = CausalLMPolicy(str(path), game=game, max_new_tokens=40, gradient_checkpointing=checkpointing)
    words = torch.tensor([i for i in range(policy.model.config.vocab_size) if i not in (policy.eos_id, policy.pad_id)])
    responses = words[torch.randint(len(words), (4, 8, 40), generator=torch.Generator().manual_seed(0))]
    prompt = torch.arange(4)
    measured = peak_bytes(lambda: policy.response_log_probs(prompt, responses).sum().backward())
    estimated = float(policy.scoring_bytes(prompt, responses).sum())
    assert measured <= estimated <= 1.3 * measured, (measured, estimated)
