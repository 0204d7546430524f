"""Nash-MD (Munos et al. 2023): play against the geometric mixture of the policy and the reference.

Exact form: m = mix_α(π_t, μ) with α = ητ by default; l' = log m + η·P·m (ALGORITHMS.md §2.2).
At a constant η its fixed point is biased away from π*_τ; it needs η → 0.
"""

from lit_nash.algorithms.base import Algorithm
from lit_nash.games import dynamics as D


class NashMD(Algorithm):
    name = "nash_md"

    def __init__(self, eta: float = 0.1, tau: float = 0.1, mixture_coef: float | None = None):
        super().__init__(eta, tau)
        alpha = self.eta * self.tau if mixture_coef is None else float(mixture_coef)
        if not 0 <= alpha <= 1:
            raise ValueError(f"algo={self.name}: mixture coefficient must lie in [0, 1], got {alpha}")
        self.mixture_coef = mixture_coef

    @property
    def alpha(self) -> float:
        return self.eta * self.tau if self.mixture_coef is None else float(self.mixture_coef)

    def exact_step(self, policy, win_rates):
        mix = D.geometric_mixture(policy.log_probs(), policy.snapshot("ref"), self.alpha)
        return D.mwu(mix, win_rates(mix), self.eta)
