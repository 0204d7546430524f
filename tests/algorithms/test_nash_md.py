from functools import partial

import pytest
import torch

from lit_nash.algorithms import NashMD
from lit_nash.algorithms.losses import policy_gradient
from lit_nash.algorithms.simulate import simulate
from lit_nash.build import build_run
from lit_nash.rollout import Rollout

from ..test_configs import compose_config
from .exact import flat_grad, on_policy, reg_gaps


def test_constant_step_stops_short_of_the_regularized_equilibrium(comal):
    """§2.2: at constant η the fixed point is biased; reg gap plateaus at ~7e-5 (η = 1), ~6e-7 (η = 0.1)."""
    plateaus = {}
    for eta in (1.0, 0.1):
        curve = reg_gaps(comal, simulate(NashMD(eta=eta, tau=0.1), comal, 20_000, record_every=1000), 0.1)
        assert curve[-1] > 1e-7, "Nash-MD at constant η must not reach π*_τ"
        assert abs(curve[-1] - curve[-5]) < 1e-3 * curve[-1], "it has converged: to the wrong point"
        plateaus[eta] = curve[-1].item()
    assert 5e-5 < plateaus[1.0] < 1e-4
    assert 3e-7 < plateaus[0.1] < 1e-6  # smaller η, smaller bias: it only vanishes as η → 0


def test_mixture_coefficient_is_eta_tau():
    assert NashMD(eta=0.1, tau=0.1).alpha == 0.1 * 0.1
    assert NashMD(eta=0.1, tau=None, mixture_coef=0.125).alpha == 0.125
    consistent = NashMD(eta=1.25, tau=0.1, mixture_coef=0.125)  # α = η·τ: both given, they agree
    assert consistent.alpha == 0.125 and consistent.regularization == 0.1


def test_a_mixture_coefficient_that_is_not_eta_tau_is_refused():
    """Issue 14.1: with α ≠ η·τ the mixture regularizes at α/η (η = τ = 0.1, α = 0.125: exact play ends at
    π*_{1.25}, regularized gap 6.3e-3 at τ = 0.1, duality gap 0.070) while the loss and the metric used τ."""
    with pytest.raises(ValueError, match="tau=null"):
        NashMD(eta=0.1, tau=0.1, mixture_coef=0.125)
    with pytest.raises(ValueError, match="set mixture_coef, or tau"):
        NashMD(eta=0.1, tau=None)


def test_mixture_coefficient_alone_sets_one_regularization_for_step_loss_and_metric(comal):
    """tau=null, mixture_coef=α: τ = α/η everywhere. Exact play is the play of tau = α/η (same trajectory),
    it converges (biased, as any constant-η Nash-MD) near π*_τ at that τ, and the loss's KL coefficient is τ."""
    algo = NashMD(eta=0.1, tau=None, mixture_coef=0.125)
    assert algo.regularization == pytest.approx(1.25)
    sim = simulate(algo, comal, 2000, record_every=1000)
    same = simulate(NashMD(eta=0.1, tau=1.25), comal, 2000, record_every=1000)
    torch.testing.assert_close(sim.trajectory, same.trajectory, rtol=0, atol=1e-15)
    assert reg_gaps(comal, sim, algo.regularization)[-1] < 1e-6  # measured 2.6e-7

    logp = torch.tensor([[-1.0, -2.0]], dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([[-1.5, -1.0]], dtype=torch.float64)
    rollout = Rollout(prompt=torch.tensor([0]), responses=torch.tensor([[0, 1]]), p=torch.tensor([[0.7, 0.2]]),
                      anchors={"ref": ref})
    torch.testing.assert_close(algo.loss(rollout, logp), policy_gradient(logp, rollout.p, [(1.25, ref)]))
    assert algo._ipo.tau == pytest.approx(1.25)  # loss=ipo's target ΔP/β uses the same τ


@pytest.mark.parametrize("overrides, tau", [
    (["algo=nash_md", "algo.tau=null", "algo.mixture_coef=0.125"], 1.25),
    (["algo=nash_md"], 0.1),
    (["algo=mpo", "algo.tau=0.05"], 0.05),
    (["algo=sppo"], 0.1),  # unregularized: the regularized gap at 0.1
])
def test_metrics_tau_follows_the_algorithms_regularization(overrides, tau):
    cfg = compose_config("fit", overrides)
    run = build_run(cfg)
    assert run.metrics.tau == pytest.approx(tau) and cfg.metrics.tau == pytest.approx(tau)  # the run's record has it


def test_policy_gradient_kl_term_is_the_exact_sequence_kl_gradient_in_expectation(enumerable_lm):
    """Issue 14.5: the pg loss's KL term τ·sg(ℓ_θ(y) − ℓ_ref(y))·ℓ_θ(y), on sequence log-probs, has expected
    gradient E_{y~π_θ}[...] = ∇KL(π_θ‖π_ref) of the sequence distribution, computed here exactly on a tiny
    causal LM whose responses (≤ 2 tokens, 12-token vocabulary: 133 per prompt) are enumerated and weighted
    by π_θ. TRL's per-token form Σ_t sg(ℓ_θ − ℓ_ref)(y_t)·ℓ_θ(y_t) drops the cross-token terms and does not
    (measured: 3.8e-7 vs 4.2e-2 relative error)."""
    policy, prompt, responses = enumerable_lm
    eos = policy.eos_id
    grad = partial(flat_grad, params=policy.trainable_parameters())
    logp = policy.response_log_probs(prompt, responses)
    ref = policy.response_log_probs(prompt, responses, source="ref")
    pi = logp.exp()
    exact = grad((pi * (logp - ref)).sum(-1).mean())  # ∇ of the mean over prompts of KL(π_θ‖π_ref)
    expected = grad(policy_gradient(on_policy(logp, pi), torch.full_like(logp, 0.5), [(1.0, ref)]))
    assert ((expected - exact).norm() / exact.norm()).item() < 1e-4

    # TRL's per-token products: ℓ_1 = log π(y_1 | x) (a one-token response), ℓ_2 = ℓ − ℓ_1 when y_1 is not EOS
    first = responses[:, :, :1]
    l1, l1_ref = policy.response_log_probs(prompt, first), policy.response_log_probs(prompt, first, source="ref")
    two = responses[:, :, 0] != eos
    l2, l2_ref = torch.where(two, logp - l1, 0.0), torch.where(two, ref - l1_ref, 0.0)
    per_token = (l1.detach() - l1_ref) * l1 + (l2.detach() - l2_ref) * l2
    trl = grad((pi.detach() * per_token).sum(-1).mean())
    assert ((trl - exact).norm() / exact.norm()).item() > 1e-2
