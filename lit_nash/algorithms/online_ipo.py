"""Online IPO / OMD (Calandriello et al. 2024): mirror descent with a linearized KL to the reference.

Exact form: l' = (1−ητ)·l + ητ·log μ + η·P·π_t (ALGORITHMS.md §2.3). ``variant`` chooses the
practical loss (1: third-sample target, 2: on-policy pair); both have this exact step.
"""

from lit_nash.algorithms.base import Algorithm
from lit_nash.games import dynamics as D


class OnlineIPO(Algorithm):
    name = "online_ipo"

    def __init__(self, eta: float = 1.0, tau: float = 0.1, variant: int = 1):
        super().__init__(eta, tau)
        if variant not in (1, 2):
            raise ValueError(f"algo={self.name}: variant must be 1 or 2, got {variant}")
        self.variant = variant

    def exact_step(self, policy, win_rates):
        l = policy.log_probs()
        return D.omd(l, win_rates(l), self.eta, self.tau, policy.snapshot("ref"))
