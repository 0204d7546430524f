"""OMWU without regularization: the last iterate reaches the NE of the original game, linearly after a burn-in,
where a full-support NE exists (docs/algorithms/omwu.md). Measured numbers are in the page's last section."""

import torch

from lit_nash.algorithms import OMWU, SPPO
from lit_nash.algorithms.simulate import simulate
from lit_nash.games import comal_cycle, duality_gap, egpo_random, nash_equilibrium
from lit_nash.games import dynamics as D
from lit_nash.generation import TabularSampler
from lit_nash.policy import TabularPolicy
from lit_nash.preference import GameOracle
from lit_nash.rollout import Rollouts

from .exact import contraction, gaps


def full_support_games(min_probability: float):
    """5-action EGPO random games (seed 1) whose unique NE puts at least ``min_probability`` on every action."""
    P = egpo_random(num_actions=5, num_games=300, seed=1).P
    ne = torch.as_tensor(nash_equilibrium(P))
    keep = ne.min(-1).values >= min_probability
    return P[keep], ne[keep]


def test_step_is_optimistic_multiplicative_weights(comal):
    """Step 1 is MWU (g(π_{−1}) = g(π_0)); step 2 is ℓ_1 + η·(2·g(π_1) − g(π_0))."""
    sim = simulate(OMWU(eta=0.7), comal, 2, record_every=1)
    l0, l1 = sim.trajectory[0], sim.trajectory[1]
    g0, g1 = D.win_rates(comal, l0), D.win_rates(comal, l1)
    torch.testing.assert_close(l1, D.mwu(l0, g0, 0.7), rtol=0, atol=1e-15)
    torch.testing.assert_close(sim.trajectory[2], D.mwu(l1, 2 * g1 - g0, 0.7), rtol=0, atol=1e-15)


def test_last_iterate_converges_linearly_on_the_comal_cycle(comal):
    """The claim on COMAL's 3-cycle (full-support NE (4/11, 3/11, 4/11)): the last iterate's gap falls under
    1e-3 after a burn-in (measured 180 steps at η = 1) and then contracts linearly (measured 0.977 per step)
    to float64 round-off; MWU (SPPO), the same step without the optimistic term, cycles at gap > 0.1 instead.
    The bound 0.99 on the rate leaves room for the fit's window, not for a sublinear tail (which fits ~1)."""
    sim = simulate(OMWU(eta=1.0), comal, 2000, record_every=10)
    curve = gaps(comal, sim)
    assert contraction(sim.steps, curve) < 0.99
    assert curve[-1] < 1e-14
    assert gaps(comal, simulate(SPPO(eta=1.0), comal, 2000, record_every=100))[-5:].min() > 0.1


def test_last_iterate_converges_linearly_on_random_games_with_full_support_ne():
    """13 random 5-action games whose NE puts ≥ 0.03 on every action, η = 2: each gap falls under 1e-10 within
    20000 steps (measured: all ≤ 4e-14) at a per-step contraction under 0.999 in its linear phase (measured
    0.974–0.9986; the slowest games have the smallest NE probabilities, the burn-in to gap 1e-6 takes 450–7950
    steps). The rate depends on min π*: with NE probabilities down to 1e-4 the burn-in outlasts 20000 steps."""
    P, _ = full_support_games(0.03)
    assert len(P) == 13
    sim = simulate(OMWU(eta=2.0), P, 20_000, record_every=50)
    curve = duality_gap(P, sim.trajectory.exp())  # (records, games)
    assert (curve[-1] < 1e-10).all()
    rates = [contraction(sim.steps, curve[:, n]) for n in range(len(P))]
    assert max(rates) < 0.999


def test_without_a_full_support_ne_the_last_iterate_still_converges_here():
    """Outside the claim: 4-action random games, whose NE has support 3 (26 of 50 games, seed 2). The actions
    outside the support lose to the NE strictly, so their mass decays geometrically and the iterate still
    converges; the burn-in is longer (measured at η = 2: worst gap 4.1e-3 at 5000 steps, 3.5e-5 at 10000,
    2.0e-7 at 20000; 25 of 26 games under 1e-9 by then). This test holds the measured behaviour, not a claim."""
    P = egpo_random(num_actions=4, num_games=50, seed=2).P
    ne = torch.as_tensor(nash_equilibrium(P))
    P, ne = P[(ne > 1e-9).sum(-1) == 3], ne[(ne > 1e-9).sum(-1) == 3]
    assert len(P) == 26
    sim = simulate(OMWU(eta=2.0), P, 20_000, record_every=5000)
    curve = duality_gap(P, sim.trajectory.exp())
    worst = curve.amax(-1)  # at 0, 5000, 10000, 15000, 20000 steps
    assert worst[-1] < 1e-6 and worst[-1] < worst[2] < worst[1]
    outside = (sim.log_pi.exp() * (ne < 1e-9)).sum(-1)
    assert (outside < 1e-6).all()


def test_a_resumed_run_continues_exactly(comal):
    """The previous win rates are the algorithm's state (in the checkpoint): 30 steps, then a new object that
    loads the state continues on the same policy and 30 more steps equal 60 straight; without the state the
    step after the resume would be plain MWU."""
    straight = simulate(OMWU(eta=1.0), comal, 60).log_pi
    first = OMWU(eta=1.0)
    half = simulate(first, comal, 30).log_pi
    state = first.state_dict()
    assert state["step"] == 30 and state["previous_win_rates"].shape == (1, 3)

    def resume(state):
        algo, policy, oracle = OMWU(eta=1.0), TabularPolicy(1, 3), GameOracle(comal_cycle())
        algo.load_state_dict(state)
        policy.set_logits(half)
        for _ in range(30):
            policy.set_logits(algo.exact_step(policy, oracle.win_rates))
            algo.end_step(policy)
        return policy.log_probs()

    torch.testing.assert_close(resume(state), straight, rtol=0, atol=1e-15)
    assert (resume({"step": 30}) - straight).abs().max() > 1e-6


def test_rollout_targets_the_optimistic_win_rates():
    """The practical rollout through the real ``Rollouts`` service: every pair (y_i, y_j) of the policy's k
    samples has the target η·[2·(P(y_i≻y_j) − ½) − (ĝ_{t−1}(y_i) − ĝ_{t−1}(y_j))], ĝ_{t−1} the mean win
    probability against the previous iterate's k samples, with the game's exact P."""
    game = egpo_random(num_actions=6, num_games=3, seed=4)
    network = TabularPolicy(game=game)
    network.push_snapshot("iterates", maxlen=2)
    network.set_logits(torch.randn(3, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    network.push_snapshot("iterates", maxlen=2)  # iterates/1 is the uniform start, iterates/0 the current policy
    rollouts = Rollouts(network, TabularSampler(network), GameOracle(game))
    algo = OMWU(eta=1.5, k=4)
    torch.manual_seed(0)
    rollout = algo.rollout(rollouts, torch.arange(3))
    y, z = rollout.samples["policy"], rollout.samples["previous"]
    P = game.P
    rows = torch.arange(3)[:, None]
    g_prev = P[rows[:, :, None], y[:, :, None], z[:, None, :]].mean(-1)
    i, j = rollout.pairs[0].unbind(-1)
    expected = 1.5 * (2 * (P[rows, y[:, i], y[:, j]] - 0.5) - (g_prev[:, i] - g_prev[:, j]))
    torch.testing.assert_close(rollout.target, expected, rtol=0, atol=1e-12)


def test_loss_minimizer_is_the_optimistic_step():
    """With every ordered pair weighted on-policy, exact labels and the exact g(π_{t−1}), the loss's minimizer
    over the logits is the exact OMWU step (INPO's soft-label argument, with the optimistic target)."""
    from tests.ladder.test_losses import exact_pair_rollout, loss_of, minimize, policy_for

    game = egpo_random(num_actions=4, num_games=2, seed=5)
    (policy, preference), algo = policy_for(game), OMWU(eta=1.5)
    l = policy.log_probs()
    previous = D.normalize(l + 0.5 * torch.randn(l.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2)))
    g, g_prev = preference.win_rates(l), preference.win_rates(previous)
    expected = D.mwu(l, 2 * g - g_prev, algo.eta)
    rollout = exact_pair_rollout(policy, preference, [])
    first, second = rollout.pairs.unbind(-1)
    rollout.target = algo.eta * (2 * (rollout.p - 0.5) - (g_prev.gather(1, first) - g_prev.gather(1, second)))
    found = minimize(policy, lambda: loss_of(algo, policy, rollout))
    torch.testing.assert_close(found, expected, rtol=0, atol=1e-7)


def test_exact_play_resumes_from_a_lightning_checkpoint(tmp_path):
    """The state goes through a real checkpoint (saved and loaded with ``weights_only``): an exact-play run
    stopped at step 7 and resumed to 14 ends on the uninterrupted run's policy, bit for bit."""
    import lightning as L

    from lit_nash.build import assemble

    def fit(steps, root, ckpt=None):
        game = egpo_random(num_actions=5, num_games=2, seed=0)
        algo = OMWU(eta=1.0)
        run = assemble(TabularPolicy(game.num_prompts, game.num_actions), algo, GameOracle(game), sampled=False)
        trainer = L.Trainer(max_steps=steps, logger=False, enable_progress_bar=False, enable_model_summary=False,
                            default_root_dir=root, callbacks=[algo])
        trainer.fit(run.policy, datamodule=run.data, ckpt_path=ckpt)
        return run.network.log_probs().detach(), trainer

    full, _ = fit(14, tmp_path / "full")
    _, trainer = fit(7, tmp_path / "first")
    trainer.save_checkpoint(tmp_path / "half.ckpt")
    resumed, _ = fit(14, tmp_path / "second", tmp_path / "half.ckpt")
    assert torch.equal(resumed, full)
