"""Rung 4 of the correctness ladder: a real transformers causal LM (a random-init tiny GPT-2) trained with
each algorithm's practical loss on a token game lowers its *exact* duality gap, through the real fit
recipe (Hydra config, Lightning Trainer, MLflow store).

The untrained LM puts ~84–98% of its mass outside the game's responses (the "invalid" action, which loses
to every response), so its gap starts near 0.85–0.98. Measured after 300 optimizer steps (2-core CPU,
docs/results.md §6, 2026-12-01): MNPO 0.08, COMAL 0.11, MPO 0.13, online IPO 0.13, EGPO 0.21, INPO 0.26,
MMD 0.27, SPPO 0.28, Nash-MD 0.29, Nash-MP 0.19 (600 steps, lr 0.005, k = 4); INPO, MNPO and COMAL with their shipped defaults
(all pairs, soft labels) since issue 14. The test asks for a gap at most half of the start — a
factor every algorithm clears with margin within the budget — and for the invalid mass to fall.

The iterate each paper claims (issue 22): a method whose *last* iterate converges must end ahead of its own
average iterate, π̄ = the mean of the policies so far (``game/avg_duality_gap``): while the last iterate
falls toward its target the average trails it, and a last iterate that cycles around the target trails its
own average instead (SPPO's, over longer runs: docs/results.md §6). Measured at 300 steps, seed 0: the last
sixth's gap is 0.28–0.83 of the average's final gap.
"""

import pytest
from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from mlflow import MlflowClient
from omegaconf import open_dict

from lit_nash.algorithms import ALGORITHMS
from lit_nash.fit import fit

BUDGET = {
    # mirror prox in parameter space discards the half step's progress: twice the steps, a larger learning rate,
    # and 4 samples per prompt: with 2, one seed in three fell back to the invalid action (measured gaps at
    # 600 steps, seeds 0/1/2: 0.96/0.25/0.25 with k=2, 0.39/0.22/0.19 with k=4)
    "nash_mp": ["trainer.max_steps=600", "policy.optimizer.lr=0.005", "algo.k=4"],
    # no regularization: at the shipped lr 1e-3 AdamW collapses the tiny LM onto a near-deterministic policy by step
    # ~180 (all k samples alike, every label ½, no gradient left; the gap stalls at 0.343, seed 0); at 3e-4
    # the gap falls 0.915 → 0.175 with the last iterate ahead of its average (0.397)
    "omwu": ["policy.optimizer.lr=3e-4"],
}
ALGOS = sorted(ALGORITHMS)  # every registered algorithm: a new one is in rung 4 without editing this file


def history(store, key):
    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("lit_nash").experiment_id])
    return [m.value for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)]


@pytest.mark.parametrize("algo", ALGOS)
def test_lm_lowers_its_exact_duality_gap(algo, tmp_path):
    store = f"sqlite:///{tmp_path / 'mlruns.db'}"
    overrides = ["task=token_game", f"algo={algo}", f"output_dir={tmp_path}", f"trainer.default_root_dir={tmp_path}",
                 f"logger.tracking_uri={store}", "trainer.enable_progress_bar=false", *BUDGET.get(algo, [])]
    with initialize_config_module(config_module="lit_nash.conf", version_base="1.3"):
        cfg = compose("fit", overrides=overrides, return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            del cfg["hydra"]  # as the CLI hands it to the task function
        final_gap = fit(cfg)
    gaps, invalid = history(store, "game/duality_gap"), history(store, "game/invalid_mass")
    assert gaps[0] > 0.85, "the untrained LM should start far from the equilibrium"
    assert final_gap == pytest.approx(gaps[-1])
    assert gaps[-1] < gaps[0] / 2
    assert invalid[-1] < invalid[0] / 2
    if ALGORITHMS[algo].iterate == "last":  # the last iterate leads its average (the module docstring)
        last_sixth = gaps[-max(1, len(gaps) // 6):]
        assert sum(last_sixth) / len(last_sixth) < history(store, "game/avg_duality_gap")[-1]
