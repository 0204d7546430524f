"""INPO (Zhang et al. 2025): no-regret OMD on the regularized game against the previous iterate.

Paper form: π_{t+1} ∝ π_ref^{τ_p/η_p} · π_t^{1−τ_p/η_p} · exp(P(y ≻ π_t)/η_p), i.e. the OMD operator
with step eta = 1/η_p and tau = τ_p (ALGORITHMS.md §2.9). Converges last-iterate to π*_τ only.
"""

from lit_nash.algorithms.base import Algorithm
from lit_nash.games import dynamics as D


class INPO(Algorithm):
    name = "inpo"

    def __init__(self, eta: float = 1.0, tau: float = 0.1):
        super().__init__(eta, tau)
        if self.eta * self.tau > 1:
            raise ValueError(f"algo={self.name}: eta*tau = τ_p/η_p must be <= 1, got {self.eta * self.tau}")

    def exact_step(self, policy, win_rates):
        l = policy.log_probs()
        return D.omd(l, win_rates(l), self.eta, self.tau, policy.snapshot("ref"))
