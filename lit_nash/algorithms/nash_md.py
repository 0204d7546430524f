"""Nash-MD (Munos et al. 2023): play against the geometric mixture of the policy and the reference.

Exact form: m = mix_α(π_t, μ) with α = ητ by default; l' = log m + η·P·m (ALGORITHMS.md §2.2).
At a constant η its fixed point is biased away from π*_τ; it needs η → 0.

Practical losses against the token-level mixture opponent (next-token logits (1−α)·ℓ_θ + α·ℓ_ref,
both with a KV cache):
* ``loss: pg`` (Nash-MD-PG, TRL's form): −(P(y≻y') − ½)·ℓ_θ(y) + τ·sg(ℓ_θ(y) − ℓ_ref(y))·ℓ_θ(y), y ~ π_θ;
* ``loss: ipo``: the online-IPO variant-1 loss with y'' drawn from the mixture.
"""

from lit_nash.algorithms.base import REDUCTIONS, Algorithm, check_choice, check_count
from lit_nash.algorithms.losses import policy_gradient
from lit_nash.algorithms.online_ipo import OnlineIPO
from lit_nash.games import dynamics as D
from lit_nash.rollout import play_against


class NashMD(Algorithm):
    name = "nash_md"

    def __init__(self, eta: float = 0.1, tau: float = 0.1, mixture_coef: float | None = None, loss: str = "pg",
                 k: int = 2, logprob_reduction: str = "sum"):
        super().__init__(eta, tau)
        if mixture_coef is None:
            if not self.eta * self.tau <= 1:
                raise ValueError(f"algo={self.name}: mixture_coef=null uses eta*tau, which must lie in [0, 1], got "
                                 f"{self.eta * self.tau}; lower eta or tau, or set mixture_coef")
        elif isinstance(mixture_coef, bool) or not isinstance(mixture_coef, (int, float)) or not 0 <= mixture_coef <= 1:
            raise ValueError(f"algo={self.name}: mixture_coef must lie in [0, 1] (or null for eta*tau), got {mixture_coef}")
        if loss not in ("pg", "ipo"):
            raise ValueError(f"algo={self.name}: loss must be 'pg' or 'ipo', got {loss!r}")
        k = check_count("k", k, self.name, 1, "responses per prompt")
        check_choice("logprob_reduction", logprob_reduction, REDUCTIONS, self.name)
        self.mixture_coef, self.loss_kind, self.k, self.logprob_reduction = mixture_coef, loss, k, logprob_reduction
        self._ipo = OnlineIPO(eta, tau, 1, k=k, opponent="mixture", logprob_reduction=logprob_reduction)

    def hparams(self):
        return {**super().hparams(), "loss": self.loss_kind}

    @property
    def alpha(self) -> float:
        return self.eta * self.tau if self.mixture_coef is None else float(self.mixture_coef)

    def exact_step(self, policy, win_rates):
        mix = D.geometric_mixture(policy.log_probs(), policy.snapshot("ref"), self.alpha)
        return D.mwu(mix, win_rates(mix), self.eta)

    def rollout(self, policy, prompt):
        if self.loss_kind == "ipo":
            return self._ipo.rollout(policy, prompt, mixture_coef=self.alpha)
        return play_against(policy, prompt, self.k, "mixture", ["ref"], self.logprob_reduction, self.alpha)

    def loss(self, policy, batch):
        if self.loss_kind == "ipo":
            return self._ipo.loss(policy, batch)
        logp = policy.response_log_probs(batch["prompt"], batch["responses"], reduction=self.logprob_reduction)
        return policy_gradient(logp, batch["p"], [(self.tau, batch["ref"])])
