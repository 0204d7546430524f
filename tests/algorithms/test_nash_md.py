import pytest
import torch

from lit_nash.algorithms import NashMD
from lit_nash.algorithms.losses import policy_gradient
from lit_nash.algorithms.simulate import simulate
from lit_nash.build import build_run
from lit_nash.games.token import token_game
from lit_nash.models import tiny_causal_lm
from lit_nash.policy.causal_lm import CausalLMPolicy
from lit_nash.rollout import Rollout

from ..test_configs import compose_config
from .exact import reg_gaps


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


def test_policy_gradient_kl_term_is_the_exact_sequence_kl_gradient_in_expectation(tmp_path):
    """Issue 14.5: the pg loss's KL term τ·sg(ℓ_θ(y) − ℓ_ref(y))·ℓ_θ(y), on sequence log-probs, has expected
    gradient E_{y~π_θ}[...] = ∇KL(π_θ‖π_ref) of the sequence distribution, computed here exactly on a tiny
    causal LM whose responses (≤ 2 tokens, 12-token vocabulary: 133 per prompt) are enumerated and weighted
    by π_θ. TRL's per-token form Σ_t sg(ℓ_θ − ℓ_ref)(y_t)·ℓ_θ(y_t) drops the cross-token terms and does not
    (measured: 3.8e-7 vs 4.2e-2 relative error)."""
    game = token_game()
    policy = CausalLMPolicy(str(tiny_causal_lm(tmp_path / "lm", game.vocabulary())), game=game, max_new_tokens=2)
    with torch.no_grad():  # move θ away from the reference (the starting weights)
        g = torch.Generator().manual_seed(0)
        for p in policy.model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * p.abs().mean())
    eos, pad = policy.eos_id, policy.pad_id
    tokens = [t for t in range(policy.model.config.vocab_size) if t != eos]
    seqs = [[eos, pad]] + [[t, eos] for t in tokens] + [[a, b] for a in tokens for b in tokens]  # every response
    N = game.num_prompts
    prompt, responses = torch.arange(N), torch.tensor(seqs).expand(N, -1, -1)
    params = policy.trainable_parameters()
    logp = policy.response_log_probs(prompt, responses)
    ref = policy.response_log_probs(prompt, responses, source="ref")
    pi = logp.exp()
    torch.testing.assert_close(pi.sum(-1).detach(), torch.ones(N), rtol=0, atol=1e-5)  # the enumeration is complete

    def grad(loss):
        return torch.cat([x.flatten() for x in torch.autograd.grad(loss, params, retain_graph=True)])

    exact = grad((pi * (logp - ref)).sum(-1).mean())  # ∇ of the mean over prompts of KL(π_θ‖π_ref)
    # E_π[∇ L(y)] through policy_gradient itself: w·ℓ + (1 − w)·sg(ℓ) has value ℓ and gradient w·∇ℓ, and
    # policy_gradient averages over the m responses, so w = m·π_θ(y) turns its mean into Σ_y π_θ(y)·(...)
    w = pi.detach() * responses.shape[1]
    weighted = w * logp + (1 - w) * logp.detach()
    expected = grad(policy_gradient(weighted, torch.full_like(logp, 0.5), [(1.0, ref)]))
    assert ((expected - exact).norm() / exact.norm()).item() < 1e-4

    # TRL's per-token products: ℓ_1 = log π(y_1 | x) (a one-token response), ℓ_2 = ℓ − ℓ_1 when y_1 is not EOS
    first = responses[:, :, :1]
    l1, l1_ref = policy.response_log_probs(prompt, first), policy.response_log_probs(prompt, first, source="ref")
    two = responses[:, :, 0] != eos
    l2, l2_ref = torch.where(two, logp - l1, 0.0), torch.where(two, ref - l1_ref, 0.0)
    per_token = (l1.detach() - l1_ref) * l1 + (l2.detach() - l2_ref) * l2
    trl = grad((pi.detach() * per_token).sum(-1).mean())
    assert ((trl - exact).norm() / exact.norm()).item() > 1e-2
