"""Nash-MD (Munos et al. 2023): play against the geometric mixture of the policy and the reference.

Exact form: m = mix_α(π_t, μ), l' = log m + η·P·m (ALGORITHMS.md §2.2), with α = η·τ by definition (the
mixture *is* the τ-regularization, applied with step η). At a constant η its fixed point is biased away
from π*_τ; it needs η → 0.

One regularization: ``regularization`` (τ) is the KL coefficient of the practical loss and the τ of
``game/reg_duality_gap`` (``metrics.tau: null``), and α = η·τ is the mixture of both exact and sampled play.
``mixture_coef`` is another way to give α: with ``tau`` null, τ = α/η; with both set they must agree
(α = η·τ), otherwise the exact step would solve the game regularized at α/η while the loss and the metric
used ``tau``.

Practical losses against the token-level mixture opponent (next-token logits (1−α)·ℓ_θ + α·ℓ_ref,
both with a KV cache):
* ``loss: pg`` (Nash-MD-PG): −(P(y≻y') − ½)·ℓ_θ(y) + τ·sg(ℓ_θ(y) − ℓ_ref(y))·ℓ_θ(y), y ~ π_θ, on
  sequence log-probs: the KL term multiplies the sequence log-ratio by the sequence log-prob, so its
  expected gradient is exactly ∇KL(π_θ‖π_ref) of the sequence distribution
  (tests/algorithms/test_nash_md.py). TRL's ``NashMDTrainer`` instead multiplies per token and sums,
  Σ_t sg(ℓ_θ − ℓ_ref)(y_t)·ℓ_θ(y_t), which keeps only the same-token terms of that gradient;
* ``loss: ipo``: the online-IPO variant-1 loss with y'' drawn from the mixture.
"""

import math

from lit_nash.algorithms.base import REDUCTIONS, Algorithm
from lit_nash.algorithms.losses import policy_gradient
from lit_nash.algorithms.online_ipo import OnlineIPO
from lit_nash.games import dynamics as D
from lit_nash.validate import in_unit_interval


class NashMD(Algorithm):
    name = "nash_md"

    def __init__(self, eta: float = 0.1, tau: float | None = 0.1, mixture_coef: float | None = None, loss: str = "pg",
                 k: int = 2, logprob_reduction: str = "sum"):
        super().__init__(eta, tau)
        if mixture_coef is None:
            if self.tau is None:
                raise ValueError(f"algo={self.name}: tau=null takes τ = mixture_coef/eta; set mixture_coef, or tau")
            if not self.eta * self.tau <= 1:
                raise ValueError(f"algo={self.name}: mixture_coef=null uses eta*tau, which must lie in [0, 1], got "
                                 f"{self.eta * self.tau}; lower eta or tau")
        else:
            alpha = in_unit_interval(f"algo={self.name}: mixture_coef", mixture_coef, note=" (or null for eta*tau)")
            if self.tau is None and alpha == 0:
                raise ValueError(f"algo={self.name}: mixture_coef=0 with tau=null is τ = α/η = 0, no regularization; "
                                 "Nash-MD needs τ > 0")
            if self.tau is not None and not math.isclose(alpha, self.eta * self.tau, rel_tol=1e-9):
                raise ValueError(
                    f"algo={self.name}: mixture_coef={alpha} but eta*tau={self.eta * self.tau}: in Nash-MD the mixture "
                    f"coefficient is η·τ, so this mixture regularizes at τ = α/η = {alpha / self.eta:g} while the loss "
                    f"and game/reg_duality_gap would use tau={self.tau:g}. Set algo.tau=null (τ = α/η), or "
                    f"algo.eta={alpha / self.tau:g} with algo.mixture_coef=null (keep tau)")
        if loss not in ("pg", "ipo"):
            raise ValueError(f"algo={self.name}: loss must be 'pg' or 'ipo', got {loss!r}")
        self.k = self.count("k", k, 1, "responses per prompt")
        self.logprob_reduction = self.choose("logprob_reduction", logprob_reduction, REDUCTIONS)
        self.mixture_coef, self.loss_kind = mixture_coef, loss
        self._ipo = OnlineIPO(eta, self.regularization, 1, k=self.k, opponent="mixture",
                              logprob_reduction=logprob_reduction)

    def hparams(self):
        return {**super().hparams(), "loss": self.loss_kind}

    @property
    def alpha(self) -> float:
        """The mixture coefficient α = η·τ (``mixture_coef`` where set)."""
        return self.eta * self.tau if self.mixture_coef is None else float(self.mixture_coef)

    @property
    def regularization(self) -> float:
        """τ of the game the exact step, the loss's KL term and the regularized gap share: ``tau``, or
        α/η when only ``mixture_coef`` is set."""
        return self.tau if self.tau is not None else self.alpha / self.eta

    def exact_step(self, policy, win_rates):
        mix = D.geometric_mixture(policy.log_probs(), policy.snapshot("ref"), self.alpha)
        return D.mwu(mix, win_rates(mix), self.eta)

    def rollout(self, rollouts, prompt):
        if self.loss_kind == "ipo":
            return self._ipo.rollout(rollouts, prompt, mixture_coef=self.alpha)
        return rollouts.play_against(prompt, self.k, "mixture", ["ref"], self.logprob_reduction, self.alpha)

    def loss(self, rollout, logp):
        if self.loss_kind == "ipo":
            return self._ipo.loss(rollout, logp)
        ref = rollout.sequence(rollout.anchors["ref"])  # the KL term on sequence log-probs whatever the reduction
        return policy_gradient(logp, rollout.p, [(self.regularization, ref)], rollout.sequence(logp),
                               behavior=rollout.sequence(rollout.policy_logp))  # a round's later epochs: y ~ π_t
