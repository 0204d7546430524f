"""The shared rollout pieces: labels are checked, only i < j pairs are asked for, pairs are selected as
the papers say, and iterative rounds sample once per round."""

import lightning as L
import pytest
import torch

from lit_nash.algorithms import INPO
from lit_nash.data import GameDataModule
from lit_nash.games import comal_cycle, egpo_random
from lit_nash.policy import TabularPolicy
from lit_nash.preference import GameOracle
from lit_nash.rollout import label, label_all_pairs, select_pairs, win_rate_scores


class CountingOracle(GameOracle):
    """The real game oracle, counting the pairs it is asked for (and able to misbehave on request)."""

    def __init__(self, game, bad_value=None):
        super().__init__(game)
        self.asked, self.bad_value = 0, bad_value

    def prob(self, prompt, a, b):
        self.asked += a.numel()
        p = super().prob(prompt, a, b)
        return p if self.bad_value is None else p.clone().fill_(self.bad_value)


@pytest.mark.parametrize("bad", [1.5, -0.1, float("nan")])
def test_a_probability_outside_0_1_is_an_error_naming_the_pair(bad):
    oracle = CountingOracle(comal_cycle(), bad_value=bad)
    with pytest.raises(ValueError, match=r"returned .* for prompt 0, pair 0 \(responses 1 vs 2\): probabilities must be finite and in \[0, 1\]"):
        label(oracle, torch.tensor([0]), torch.tensor([[1]]), torch.tensor([[2]]))


def test_all_pairs_asks_only_for_i_below_j_and_is_constant_sum():
    game = egpo_random(num_actions=6, num_games=3, seed=0)
    oracle = CountingOracle(game)
    responses = torch.randint(0, 6, (3, 5), generator=torch.Generator().manual_seed(0))
    P = label_all_pairs(oracle, torch.arange(3), responses)
    assert oracle.asked == 3 * 10  # k(k−1)/2 per prompt
    torch.testing.assert_close(P + P.transpose(1, 2), torch.ones_like(P))
    expected = game.P[torch.arange(3)[:, None, None], responses[:, :, None], responses[:, None, :]]
    off = ~torch.eye(5, dtype=torch.bool)
    torch.testing.assert_close(P[:, off], expected[:, off])


def test_pair_selection():
    """A transitive order 0 ≻ 1 ≻ 2 ≻ 3 among four samples (in shuffled positions)."""
    order = torch.tensor([2, 0, 3, 1])  # sample i has rank order[i]
    P = torch.where(order[:, None] < order[None, :], 0.8, 0.2).double()
    P.fill_diagonal_(0.5)
    P = P.unsqueeze(0)
    assert win_rate_scores(P)[0].argmax() == 1
    assert [x.item() for x in select_pairs(P, "best_worst")] == [1, 2]
    assert [x.item() for x in select_pairs(P, "top2")] == [1, 3]
    assert [x.item() for x in select_pairs(P, "tournament")] == [1, 2]  # the Condorcet winner and loser
    with pytest.raises(ValueError, match="pair selection must be one of"):
        select_pairs(P, "random")


def test_iterative_mode_samples_once_per_round_and_trains_every_step():
    L.seed_everything(0, verbose=False)  # unseeded, a round could draw one action only: a tied pair, loss 0
    game = comal_cycle()
    oracle = CountingOracle(game)
    algo = INPO(k=4)
    policy = TabularPolicy(game=game, mode="sampled", lr=0.05, algorithm=algo, preference=oracle)
    losses = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    trainer = L.Trainer(max_steps=9, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[algo, Record()])
    trainer.fit(policy, datamodule=GameDataModule(1, epochs_per_round=3))
    assert oracle.asked == 3 * 6  # 3 rounds, k(k−1)/2 = 6 pairs each
    assert len(losses) == 9 and losses[0] != losses[1]  # same samples, moving policy: the loss changes
