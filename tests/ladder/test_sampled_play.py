"""Rung 3 of the correctness ladder: each algorithm's practical loss on *sampled* responses, on a tabular
policy through the real Lightning loop, drives the exact gaps of the COMAL 3-cycle down.

Thresholds, from the theory and the exact dynamics (tests/algorithms/test_<name>.py):
* regularized methods converge to π*_τ: the regularized gap (τ = 0.1, uniform μ) must fall 5× below its
  start (7.3e-3 at the uniform policy) — sampling noise leaves a floor proportional to the learning rate;
* MPO and COMAL converge to the original NE: the policy averaged over the last 2000 steps (averaging
  removes the sampling noise, which alone can push a single iterate below the line) must have a gap
  under 0.015, well below π*_τ's 0.0245, the plateau of every regularized-only method; INPO and MMD,
  run the same way, are the control: their averages sit on the plateau (measured MPO 0.0079,
  COMAL 0.0089; INPO 0.0265, MMD 0.0243);
* SPPO (MWU) has no last-iterate guarantee; its time-averaged policy must beat the uniform start.
"""

from functools import partial

import lightning as L
import pytest
import torch

from lit_nash.algorithms import COMAL, EGPO, INPO, MMD, MNPO, MPO, SPPO, NashMD, NashMP, OnlineIPO
from lit_nash.build import assemble
from lit_nash.games import comal_cycle, duality_gap, regularized_duality_gap
from lit_nash.policy import TabularPolicy
from lit_nash.preference import GameOracle

START_GAP, START_REG_GAP, PLATEAU = 0.0667, 7.34e-3, 0.0245


class AveragePolicy(L.Callback):
    """The mean policy over the steps after ``start``."""

    def __init__(self, start: int = 0):
        self.start, self.total, self.count = start, 0.0, 0

    def on_train_batch_end(self, trainer, pl_module, *args):
        if trainer.global_step > self.start:
            self.total, self.count = self.total + pl_module.network.log_probs().exp(), self.count + 1

    def gap(self):
        return duality_gap(comal_cycle().P, self.total / self.count).item()


def play(algo, steps, lr, average_from=0):
    L.seed_everything(0, verbose=False)
    game = comal_cycle()
    run = assemble(TabularPolicy(1, 3), algo, GameOracle(game), optimizer=partial(torch.optim.SGD, lr=lr))
    average = AveragePolicy(average_from)
    trainer = L.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[run.algorithm, average])
    trainer.fit(run.policy, datamodule=run.data)
    pi = run.network.log_probs().exp()
    uniform = torch.full_like(pi, 1 / 3)
    return duality_gap(game.P, pi).item(), regularized_duality_gap(game.P, pi, uniform, 0.1).item(), average


REGULARIZED = {
    "online_ipo": (lambda: OnlineIPO(k=256), 3000, 0.01),  # its target ±1/τ per pair is noisy: many pairs, small lr
    "egpo": (lambda: EGPO(k=256), 2000, 0.05),
    "inpo": (lambda: INPO(k=16, pairs="all", target="soft"), 4000, 0.05),
    "mnpo": (lambda: MNPO(k=16, pairs="all", target="soft"), 4000, 0.05),
    "nash_md": (lambda: NashMD(eta=1.0, k=64), 3000, 0.1),
    "mmd": (lambda: MMD(k=64), 3000, 0.1),
    "nash_mp": (lambda: NashMP(k=64), 1500, 0.1),
    "nash_mp-ema": (lambda: NashMP(k=64, center_rate=0.5), 1500, 0.1),  # the moving prox center
}


@pytest.mark.parametrize("name", sorted(REGULARIZED))
def test_regularized_methods_approach_the_regularized_equilibrium(name):
    make, steps, lr = REGULARIZED[name]
    _, reg_gap, _ = play(make(), steps, lr)
    assert reg_gap < START_REG_GAP / 5


@pytest.mark.parametrize(
    "make,lr,passes",
    [(lambda: MPO(k=64, magnet_every=1000), 0.1, True),
     (lambda: COMAL(k=32, reset_every=1000, pairs="all", target="soft"), 0.05, True),
     (lambda: INPO(k=16, pairs="all", target="soft"), 0.05, False),
     (lambda: MMD(k=64), 0.1, False)],
    ids=["mpo", "comal", "inpo-control", "mmd-control"],
)
def test_magnet_and_prox_resets_pass_the_regularized_plateau(make, lr, passes):
    _, _, average = play(make(), 6000, lr, average_from=4000)
    if passes:
        assert average.gap() < 0.015
    else:
        assert average.gap() > 0.02  # regularized only: stuck near π*_τ's gap 0.0245


def test_sppo_average_iterate_improves_on_the_start():
    _, _, average = play(SPPO(k=16), 3000, 0.05)
    assert average.gap() < START_GAP / 2


# -- every algorithm with its shipped defaults (issue 14.4) ------------------------------------------------
# Only the learning rate and the step budget are the test's; every hyperparameter is the class default
# (= conf/algo/<name>.yaml). The policy averaged over the last third of the run is compared with the target:
# π*_τ (gap 0.0245) for the regularized methods, the NE (gap 0) for MPO and COMAL, the time average for SPPO.
# Tolerance 0.045 on the averaged policy's gap: π*_τ's 0.0245 plus the sampling-noise floor of the small
# default k (1 for EGPO/online IPO, 2 for MMD/MPO/Nash-MD/Nash-MP), measured on seeds 0/1/2 in
# docs/results.md §5 (largest 0.040; EGPO's one pair per step needs lr 0.005 and 8000
# steps: at lr 0.02 its seed 2 stays at 0.066); the start is 0.0667 and the papers' constant-target recipes of
# INPO/MNPO/COMAL stay there (0.06-0.08, the uniform policy is their fixed point on comal_cycle).
DEFAULT_BUDGET = {  # name: (steps, lr)
    "comal": (4000, 0.02), "egpo": (8000, 0.005), "inpo": (4000, 0.02), "mmd": (4000, 0.02),
    "mnpo": (4000, 0.02), "mpo": (6000, 0.05), "nash_md": (4000, 0.02), "nash_mp": (4000, 0.02),
    "online_ipo": (4000, 0.01), "sppo": (4000, 0.02),
}
DEFAULT_TOLERANCE = 0.045


@pytest.mark.parametrize("name", sorted(DEFAULT_BUDGET))
def test_shipped_defaults_reach_the_neighbourhood_of_the_target(name):
    from lit_nash.algorithms.base import registry

    assert set(DEFAULT_BUDGET) == set(registry())  # a new algorithm needs a budget here
    steps, lr = DEFAULT_BUDGET[name]
    _, _, average = play(registry()[name](), steps, lr, average_from=2 * steps // 3)
    assert average.gap() < DEFAULT_TOLERANCE


@pytest.mark.parametrize("pairs", ["tournament", "best_worst", "top2"])
def test_soft_labels_on_a_selected_pair_are_refused(pairs):
    for cls in (INPO, MNPO, COMAL):
        with pytest.raises(ValueError, match="target=soft needs pairs=all"):
            cls(pairs=pairs, target="soft")
