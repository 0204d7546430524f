"""MMD, magnetic mirror descent (Sokota et al. 2023) with the reference as a fixed magnet.

Exact form: the prox step l' = (l + ητ·log μ + η·P·π_t)/(1+ητ). Linear last-iterate convergence to
π*_τ for small enough η; the base that MPO adds magnet updates to (ALGORITHMS.md §2.6).
"""

from lit_nash.algorithms.base import Algorithm
from lit_nash.games import dynamics as D


class MMD(Algorithm):
    name = "mmd"

    def __init__(self, eta: float = 1.0, tau: float = 0.1):
        super().__init__(eta, tau)

    def exact_step(self, policy, win_rates):
        l = policy.log_probs()
        return D.prox(l, win_rates(l), self.eta, self.tau, policy.snapshot("ref"))
