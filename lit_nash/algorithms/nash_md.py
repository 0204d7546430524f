"""Nash-MD (Munos et al. 2023): play against the geometric mixture of the policy and the reference.

Exact form: m = mix_α(π_t, μ) with α = ητ by default; l' = log m + η·P·m (ALGORITHMS.md §2.2).
At a constant η its fixed point is biased away from π*_τ; it needs η → 0.

Practical losses against the token-level mixture opponent (next-token logits (1−α)·ℓ_θ + α·ℓ_ref,
both with a KV cache):
* ``loss: pg`` (Nash-MD-PG, TRL's form): −(P(y≻y') − ½)·ℓ_θ(y) + τ·sg(ℓ_θ(y) − ℓ_ref(y))·ℓ_θ(y), y ~ π_θ;
* ``loss: ipo``: the online-IPO variant-1 loss with y'' drawn from the mixture.
"""

from lit_nash.algorithms.base import REDUCTIONS, Algorithm
from lit_nash.algorithms.losses import policy_gradient
from lit_nash.algorithms.online_ipo import OnlineIPO
from lit_nash.games import dynamics as D
from lit_nash.validate import in_unit_interval


class NashMD(Algorithm):
    name = "nash_md"

    def __init__(self, eta: float = 0.1, tau: float = 0.1, mixture_coef: float | None = None, loss: str = "pg",
                 k: int = 2, logprob_reduction: str = "sum"):
        super().__init__(eta, tau)
        if mixture_coef is None:
            if not self.eta * self.tau <= 1:
                raise ValueError(f"algo={self.name}: mixture_coef=null uses eta*tau, which must lie in [0, 1], got "
                                 f"{self.eta * self.tau}; lower eta or tau, or set mixture_coef")
        else:
            in_unit_interval(f"algo={self.name}: mixture_coef", mixture_coef, note=" (or null for eta*tau)")
        if loss not in ("pg", "ipo"):
            raise ValueError(f"algo={self.name}: loss must be 'pg' or 'ipo', got {loss!r}")
        self.k = self.count("k", k, 1, "responses per prompt")
        self.logprob_reduction = self.choose("logprob_reduction", logprob_reduction, REDUCTIONS)
        self.mixture_coef, self.loss_kind = mixture_coef, loss
        self._ipo = OnlineIPO(eta, tau, 1, k=self.k, opponent="mixture", logprob_reduction=logprob_reduction)

    def hparams(self):
        return {**super().hparams(), "loss": self.loss_kind}

    @property
    def alpha(self) -> float:
        return self.eta * self.tau if self.mixture_coef is None else float(self.mixture_coef)

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
        return policy_gradient(logp, rollout.p, [(self.tau, rollout.anchors["ref"])])
