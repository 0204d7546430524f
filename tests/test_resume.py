"""Resume: a sampled run stopped after N steps and resumed from its checkpoint reaches the same parameters,
snapshots and metrics at step 2N as an uninterrupted run (CPU, seeded), and EGPO's restore is bit-exact."""

from functools import partial

import lightning as L
import pytest
import torch

from lit_nash.algorithms import ALGORITHMS, EGPO
from lit_nash.build import assemble
from lit_nash.engine import RolloutDataModule
from lit_nash.games import egpo_random
from lit_nash.metrics import GameMetrics
from lit_nash.policy import TabularPolicy
from lit_nash.preference import GameOracle
from lit_nash.rng import RNGCheckpoint

SETTINGS = {"mpo": {"magnet_every": 3}, "comal": {"reset_every": 3}, "mnpo": {"history_weights": [0.5, 0.3, 0.2]}}


def build(name, steps, tmp_path, epochs_per_round=1, settings=None):
    game = egpo_random(num_actions=5, num_games=4, seed=0)
    algo = ALGORITHMS[name](**(SETTINGS.get(name, {}) if settings is None else settings))
    data = RolloutDataModule(game.num_prompts, prompts_per_step=3, epochs_per_round=epochs_per_round)
    run = assemble(TabularPolicy(game.num_prompts, game.num_actions, reference="gaussian"), algo, GameOracle(game),
                   data, optimizer=partial(torch.optim.Adam, lr=0.05))
    trainer = L.Trainer(max_steps=steps, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path, log_every_n_steps=1,
                        callbacks=[algo, GameMetrics(game.P, tau=0.1), RNGCheckpoint()])
    return run.policy, trainer, run.data


CASES = [(name, None) for name in sorted(ALGORITHMS)] + [("nash_mp", {"center_rate": 0.5, "inner_steps": 2})]


@pytest.mark.parametrize("name,settings", CASES, ids=[n if s is None else f"{n}-ema" for n, s in CASES])
def test_resumed_run_equals_uninterrupted_run(name, settings, tmp_path):
    """N is chosen mid-schedule: MPO/COMAL reset every 3 steps and N = 7 (EGPO and Nash-MP take two
    optimizer steps per iteration, so their N counts optimizer steps: 14). Nash-MP with a moving prox
    center and 2 inner steps takes 4 steps per iteration (the first run rounds 14 up to 16); its EMA
    center and its iterate snapshot come back from the checkpoint."""
    per_iteration = 2 if name in ("egpo", "nash_mp") else 1
    N = 7 * per_iteration
    L.seed_everything(0, verbose=False)
    policy, trainer, data = build(name, 2 * N, tmp_path / "full", settings=settings)
    trainer.fit(policy, datamodule=data)
    full = {k: v.clone() for k, v in policy.state_dict().items()}, dict(trainer.callback_metrics)

    L.seed_everything(0, verbose=False)
    policy, trainer, data = build(name, N, tmp_path / "first", settings=settings)
    trainer.fit(policy, datamodule=data)
    ckpt = tmp_path / "half.ckpt"
    trainer.save_checkpoint(ckpt)
    L.seed_everything(123, verbose=False)  # the checkpoint's RNG state must win over whatever is current
    policy, trainer, data = build(name, 2 * N, tmp_path / "second", settings=settings)
    trainer.fit(policy, datamodule=data, ckpt_path=ckpt)

    assert policy.algorithm.step == 2 * N // policy.algorithm.steps_per_iteration(True)
    state, metrics = policy.state_dict(), trainer.callback_metrics
    assert state.keys() == full[0].keys()
    for key, value in full[0].items():
        assert torch.equal(state[key], value), key
    for key, value in full[1].items():
        assert torch.equal(metrics[key], value), key


@pytest.mark.parametrize("name", ["sppo", "inpo", "comal", "mpo"])
def test_resume_mid_round_of_iterative_mode(name, tmp_path):
    """Rounds of 3 steps, stopped after step 7 (mid-round): the round's samples come back from the checkpoint."""
    L.seed_everything(0, verbose=False)
    policy, trainer, data = build(name, 14, tmp_path / "full", epochs_per_round=3)
    trainer.fit(policy, datamodule=data)
    full = {k: v.clone() for k, v in policy.state_dict().items()}
    L.seed_everything(0, verbose=False)
    policy, trainer, data = build(name, 7, tmp_path / "first", epochs_per_round=3)
    trainer.fit(policy, datamodule=data)
    trainer.save_checkpoint(tmp_path / "mid.ckpt")
    L.seed_everything(5, verbose=False)
    policy, trainer, data = build(name, 14, tmp_path / "second", epochs_per_round=3)
    trainer.fit(policy, datamodule=data, ckpt_path=tmp_path / "mid.ckpt")
    for key, value in full.items():
        assert torch.equal(policy.state_dict()[key], value), key


def test_egpo_restore_is_bit_identical_with_adam_state(tmp_path):
    game = egpo_random(num_actions=5, num_games=2, seed=0)
    algo = EGPO(k=4)
    run = assemble(TabularPolicy(game.num_prompts, game.num_actions), algo, GameOracle(game),
                   optimizer=partial(torch.optim.AdamW, lr=0.1))
    policy, network = run.policy, run.network
    trainer = L.Trainer(max_steps=6, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, callbacks=[algo])
    trainer.fit(policy, datamodule=run.data)  # Adam moments are non-trivial now
    algo.two_call.start(policy, trainer.global_step)  # the start of an iteration: θ_t and the optimizer state saved
    before_params = network.logits.detach().clone()
    before_opt = policy.optimizers().optimizer.state_dict()
    before_opt = {k: {n: (t.clone() if torch.is_tensor(t) else t) for n, t in v.items()} for k, v in before_opt["state"].items()}
    opt = policy.optimizers().optimizer  # a half step
    opt.zero_grad()
    policy.micro_batch_loss(algo._ipo.rollout(run.rollouts, torch.arange(2))).backward()
    opt.step()
    assert not torch.equal(network.logits, before_params)
    algo.two_call.end(policy, trainer.global_step + 1)  # the end of the first call: back to θ_t
    assert torch.equal(network.logits.detach(), before_params)
    after = policy.optimizers().optimizer.state_dict()["state"]
    for k, v in before_opt.items():
        for n, t in v.items():
            assert torch.equal(torch.as_tensor(after[k][n]), torch.as_tensor(t)), (k, n)
