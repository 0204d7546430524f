"""The shared rollout pieces: labels are checked, only i < j pairs are asked for, pairs are selected as
the papers say, and iterative rounds sample once per round."""

import io
from functools import partial

import lightning as L
import pytest
import torch

from lit_nash.algorithms import INPO
from lit_nash.build import assemble
from lit_nash.engine import RolloutDataModule
from lit_nash.games import comal_cycle, egpo_random
from lit_nash.generation import TabularSampler
from lit_nash.policy import TabularPolicy
from lit_nash.preference import GameOracle
from lit_nash.rollout import Rollouts, label, select_pairs, win_rate_scores


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
    network = TabularPolicy(game=game)
    P = Rollouts(network, TabularSampler(network), oracle).label_all_pairs(torch.arange(3), responses)
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
    run = assemble(TabularPolicy(game=game), algo, oracle, RolloutDataModule(1, epochs_per_round=3),
                   optimizer=partial(torch.optim.SGD, lr=0.05))
    losses = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    trainer = L.Trainer(max_steps=9, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[algo, Record()])
    trainer.fit(run.policy, datamodule=run.data)
    assert oracle.asked == 3 * 6  # 3 rounds, k(k−1)/2 = 6 pairs each
    assert len(losses) == 9 and losses[0] != losses[1]  # same samples, moving policy: the loss changes


# -- the typed rollout record and the one labeling path ---------------------------------------------------
def make_rollout():
    from lit_nash.rollout import Rollout

    N = 4
    return Rollout(prompt=torch.arange(N), responses=torch.arange(N * 2 * 3).view(N, 2, 3), reduction="mean",
                   pairs=torch.tensor([[[0, 1]]]).expand(N, 1, 2), p=torch.rand(N, 1), target=torch.rand(N, 1), weight=torch.ones(N),
                   anchors={"ref": torch.randn(N, 2), "history/0": torch.randn(N, 2)},
                   samples={"policy": torch.zeros(N, 5, 3, dtype=torch.long)})


def test_a_rollout_splits_by_prompt_rows_and_round_trips_through_its_state():
    from lit_nash.rollout import Rollout

    rollout = make_rollout()
    rows = torch.tensor([1, 3])
    part = rollout.select(rows)
    assert len(part) == 2 and part.reduction == "mean" and part.policy_logp is None
    assert torch.equal(part.responses, rollout.responses[rows]) and torch.equal(part.p, rollout.p[rows])
    assert part.pairs.shape == (2, 1, 2) and torch.equal(part.difference(torch.tensor([[1.0, 3.0], [2.0, 7.0]])),
                                                         torch.tensor([[-2.0], [-5.0]]))
    assert set(part.anchors) == {"ref", "history/0"} and torch.equal(part.anchors["ref"], rollout.anchors["ref"][rows])
    assert torch.equal(part.samples["policy"], rollout.samples["policy"][rows])
    state = rollout.to_state()
    assert all(isinstance(v, (torch.Tensor, dict, str, type(None))) for v in state.values())  # weights_only-safe
    saved = io.BytesIO()
    torch.save(state, saved)
    again = Rollout.from_state(torch.load(io.BytesIO(saved.getvalue()), weights_only=True))
    assert torch.equal(again.target, rollout.target) and again.anchors.keys() == rollout.anchors.keys()
    assert torch.equal(again.pairs, rollout.pairs)


class CountingReader:
    """A policy's text side: prompt texts and a decoder that counts the rows it decodes."""

    def __init__(self):
        self.decoded = 0

    def prompt_text(self, i):
        return f"prompt {i}"

    def decode(self, responses):
        self.decoded += responses.shape[0]
        return [" ".join(map(str, row.tolist())) for row in responses]


class EchoTextPreference:
    """A text preference model that prefers the longer text (its input is what the reader decoded)."""

    def __init__(self):
        self.calls = []

    def prob_text(self, prompts, a, b):
        self.calls.append((list(prompts), list(a), list(b)))
        return torch.tensor([0.75 if len(x) > len(y) else 0.25 for x, y in zip(a, b)])


def test_label_decodes_each_distinct_sample_once_and_hands_text_to_the_model():
    from lit_nash.rollout import label

    reader, preference = CountingReader(), EchoTextPreference()
    third = torch.tensor([[[7, 7]], [[8, 8]]])  # one y'' per prompt, met by y and y' (online IPO's call)
    pair = torch.tensor([[[1, 2], [10, 11]], [[3, 4], [5, 6]]])
    p = label(preference, torch.tensor([0, 1]), pair, torch.cat([third, third], dim=1), reader)
    assert p.shape == (2, 2)
    assert reader.decoded == 4 + 2  # four distinct y/y' and two distinct y'', not 8
    prompts, a, b = preference.calls[0]
    assert prompts == ["prompt 0", "prompt 0", "prompt 1", "prompt 1"] and a[1] == "10 11" and b == ["7 7", "7 7", "8 8", "8 8"]


def test_a_text_preference_model_needs_the_policy_that_wrote_the_responses():
    from lit_nash.rollout import label

    with pytest.raises(ValueError, match="needs the responses as text"):
        label(EchoTextPreference(), torch.tensor([0]), torch.zeros(1, 1, 2, dtype=torch.long), torch.zeros(1, 1, 2, dtype=torch.long))


def test_label_refuses_a_probability_outside_the_unit_interval():
    from lit_nash.guards import NumericalError
    from lit_nash.rollout import label

    class Bad(EchoTextPreference):
        def prob_text(self, prompts, a, b):
            return torch.full((len(a),), 1.5)

    with pytest.raises(NumericalError, match="returned 1.5 for prompt 0, pair 0"):
        label(Bad(), torch.tensor([0]), torch.zeros(1, 1, 2, dtype=torch.long), torch.ones(1, 1, 2, dtype=torch.long),
              CountingReader())
