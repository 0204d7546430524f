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

from lit_nash.algorithms import ALGORITHMS, COMAL, EGPO, INPO, MMD, MNPO, MPO, SPPO, NashMD, NashMP, OnlineIPO
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
    # online IPO and EGPO: the loss is in reward units, β² = 1/100 of the paper's, so these learning rates are
    # 0.01 and 0.05 on the paper's loss: its target ±1/τ per pair is noisy, so many pairs and a small step
    "online_ipo": (lambda: OnlineIPO(k=256), 3000, 1.0),
    "egpo": (lambda: EGPO(k=256), 2000, 5.0),
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


# -- every algorithm as shipped, through fit (issue 22) --------------------------------------------------------
# `fit algo=<name> rollout=sampled` on comal_cycle with the shipped config: the overrides below beyond seed and
# steps only say where to write. The iterate each paper claims is held to its target: the *last* iterate's
# duality gap, averaged over the last sixth of the run (the logged steps, every 10th), at most 0.03 for the
# methods that converge to the original NE (MPO, COMAL: the NE's gap is 0; the gap grows linearly with any
# distance from the NE, so this is a distance of about 0.015 in probability) and 0.04 for those that converge
# to π*_τ of the uniform reference (its own gap is 0.0245, a margin of 0.0155 for the sampling noise the
# learning rate leaves); SPPO's claim is its *average* iterate, whose gap at the end must be at most 0.03.
# Measured on seeds 0/1/2 (docs/results.md §5): the largest last-iterate figures are COMAL's 0.0134 (NE) and
# Nash-MP's 0.0296 (π*_τ), SPPO's largest average 0.0245.
SHIPPED_STEPS = 12000
LIMIT = {"NE": 0.03, "regularized NE": 0.04}


def fit_shipped(name: str, seed: int, tmp_path, steps: int = SHIPPED_STEPS, key: str = "game/duality_gap"):
    """The mean of ``key`` over the logged steps of the last sixth, and the average iterate's duality gap at the end,
    of ``fit`` with the shipped sampled-play config."""
    from hydra import compose, initialize_config_module
    from hydra.core.hydra_config import HydraConfig
    from mlflow import MlflowClient
    from omegaconf import open_dict

    from lit_nash.fit import fit

    store = f"sqlite:///{tmp_path / 'mlruns.db'}"
    overrides = [f"algo={name}", "rollout=sampled", f"seed={seed}", f"trainer.max_steps={steps}",
                 f"output_dir={tmp_path}", f"checkpoint.dir={tmp_path / 'checkpoints'}", f"logger.tracking_uri={store}",
                 f"trainer.default_root_dir={tmp_path}", "trainer.enable_progress_bar=false"]
    with initialize_config_module(config_module="lit_nash.conf", version_base="1.3"):
        cfg = compose("fit", overrides=overrides, return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            del cfg["hydra"]  # as the CLI hands it to the task function
        fit(cfg)
    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("lit_nash").experiment_id])

    def history(key):
        return [m.value for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)]

    logged = sorted(m.step for m in client.get_metric_history(run.info.run_id, key))
    window = [g for step, g in zip(logged, history(key)) if step >= steps - steps // 6]
    return sum(window) / len(window), history("game/avg_duality_gap")[-1]


# Known misses, measured (docs/algorithms/<name>.md): strict, so a fix that meets the target fails here until
# its mark is removed. OMWU's unregularized last iterate wanders at the sampling noise floor: seeds 0/1/2 give
# 0.0203 / 0.0146 / 0.0330; k = 16 (0.0286 / 0.0079 / 0.0108) and eta = 0.5 (0.0209 / 0.0373 / 0.0201) did not
# hold all three seeds either.
KNOWN_MISSES = {("omwu", 2): "OMWU seed 2: last iterate's gap 0.0330 > 0.03 (issue 27, open)"}


def shipped_cases():
    for name in sorted(ALGORITHMS):
        for seed in (0, 1, 2):
            reason = KNOWN_MISSES.get((name, seed))
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            yield pytest.param(name, seed, marks=marks, id=f"{name}-{seed}")


@pytest.mark.slow  # 12,000 steps: 2-7 minutes a run on a 2-core box; the cheap tests above cover the losses
@pytest.mark.parametrize(("name", "seed"), list(shipped_cases()))
def test_shipped_sampled_play_reaches_the_claimed_target(name, seed, tmp_path):
    algorithm = ALGORITHMS[name]
    last, average = fit_shipped(name, seed, tmp_path)
    if algorithm.iterate == "last":
        assert last <= LIMIT[algorithm.converges_to], f"{name}: last iterate's gap {last:.4f} (average {average:.4f})"
    else:
        assert average <= LIMIT[algorithm.converges_to], f"{name}: average iterate's gap {average:.4f}"


@pytest.mark.parametrize("pairs", ["tournament", "best_worst", "top2"])
def test_soft_labels_on_a_selected_pair_are_refused(pairs):
    for cls in (INPO, MNPO, COMAL):
        with pytest.raises(ValueError, match="target=soft needs pairs=all"):
            cls(pairs=pairs, target="soft")
