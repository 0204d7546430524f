import torch

from lit_nash.algorithms import COMAL
from lit_nash.algorithms.simulate import simulate
from lit_nash.games import MatrixGame, comal_cycle, kl, nash_equilibrium
from lit_nash.generation import TabularSampler
from lit_nash.policy import TabularPolicy
from lit_nash.preference import GameOracle
from lit_nash.rollout import Rollouts

from .exact import gaps


def test_prox_resets_reach_the_original_equilibrium(comal):
    """§3 target 3: COMAL (OMD inner, η = 1, τ = 0.1, reset every 100) reaches gap < 1e-8 within 5000 steps
    (ALGORITHMS.md §2.8 measured 1e-8 at t = 1718)."""
    for inner in ("omd", "prox"):
        curve = gaps(comal, simulate(COMAL(eta=1.0, tau=0.1, reset_every=100, inner=inner), comal, 5000, record_every=100))
        assert curve[-1] < 1e-8, inner


def test_kl_to_the_equilibrium_never_increases_across_resets(comal):
    """The conceptual prox method's invariant: KL(π* ‖ anchor_k) is non-increasing in k (Thm 1)."""
    star = torch.as_tensor(nash_equilibrium(comal))
    sim = simulate(COMAL(eta=1.0, tau=0.1, reset_every=100), comal, 3000, record_every=100)
    anchors = kl(star, sim.trajectory.exp()).squeeze(-1)  # the anchor is the iterate at each reset
    assert (anchors[1:] <= anchors[:-1] + 1e-15).all()
    assert anchors[-1] < 1e-12


def test_resetting_every_step_diverges_like_mwu(comal):
    curve = gaps(comal, simulate(COMAL(eta=1.0, tau=0.1, reset_every=1), comal, 2000, record_every=100))
    assert curve[-5:].min() > 0.1


class FixedSamples:
    """A rollout service that 'samples' given responses and labels them with the exact game."""

    def __init__(self, game, samples):
        self.game, self.samples = game, samples

    def sample(self, prompt, groups):
        return [self.samples]

    def label_all_pairs(self, prompt, responses):
        network = TabularPolicy(game=self.game)
        return Rollouts(network, TabularSampler(network), GameOracle(self.game)).label_all_pairs(prompt, responses)

    def anchors(self, prompt, responses, names, reduction):
        return {name: torch.zeros(responses.shape, dtype=torch.float64) for name in names}


def test_pairs_are_top1_vs_top2_of_the_distinct_responses_unfiltered():
    """Issue 14.3, yale-nlp/COMAL data_processing.py: identical responses are one candidate before ranking,
    the pair is top-1 vs top-2 of the distinct ones, and no pair is filtered. On comal_cycle (a ≺ b ≺ c ≺ a)
    the samples b, b, a, a, c score b 0.6, c 0.55, a 0.375 (leave-one-out): the old top-2 was b's copy
    (then dropped by the P̂ > ½ filter); now it is c, trained although P(b ≻ c) = 0.1. A prompt whose
    samples are all one response contributes no pair."""
    game = MatrixGame(comal_cycle().P.expand(2, 3, 3).clone(), name="comal_cycle_x2")
    samples = torch.tensor([[1, 1, 0, 0, 2], [2, 2, 2, 2, 2]])
    rollout = COMAL(pairs="top2", target="constant").rollout(FixedSamples(game, samples), torch.arange(2))
    assert rollout.responses.tolist() == [[1, 2], [2, 2]] and rollout.pairs.tolist() == [[[0, 1]], [[0, 1]]]
    assert rollout.weight.tolist() == [[2.0], [0.0]]  # scaled to mean 1 over the step
    torch.testing.assert_close(rollout.p, torch.tensor([[0.1], [0.5]], dtype=torch.float64))


def test_distinct_scores_pool_the_copies():
    from lit_nash.rollout import distinct_scores

    P = torch.tensor([[[0.5, 0.5, 0.3], [0.5, 0.5, 0.7], [0.7, 0.3, 0.5]]], dtype=torch.float64)  # copies 0, 1 differ vs 2
    scores, first = distinct_scores(P, torch.tensor([[4, 4, 7]]))
    assert first.tolist() == [[True, False, True]]
    torch.testing.assert_close(scores[0, 0], torch.tensor((0.4 + 0.6) / 2, dtype=torch.float64))  # mean of the copies
    assert scores[0, 1].isnan() and scores[0, 2] == 0.5
