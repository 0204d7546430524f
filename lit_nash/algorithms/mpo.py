"""MPO, magnetic preference optimization (Wang et al. 2025): MMD whose magnet follows the policy.

Exact form: the prox step toward the magnet μ_k; every ``magnet_every`` steps the magnet becomes the
current policy. The regularized equilibria then converge to the NE of the *original* game
(a proximal-point argument, ALGORITHMS.md §2.7).
"""

from lit_nash.algorithms.base import Algorithm, check_period
from lit_nash.games import dynamics as D


class MPO(Algorithm):
    name = "mpo"

    def __init__(self, eta: float = 1.0, tau: float = 0.1, magnet_every: int | None = 100):
        super().__init__(eta, tau)
        self.magnet_every = check_period("magnet_every", magnet_every, self.name)

    def prepare(self, policy):
        if not policy.has_snapshot("magnet"):
            policy.refresh_snapshot("magnet")

    def exact_step(self, policy, win_rates):
        l = policy.log_probs()
        return D.prox(l, win_rates(l), self.eta, self.tau, policy.snapshot("magnet"))

    def schedule(self, policy):
        if D.is_reset_step(self.step, self.magnet_every):
            policy.refresh_snapshot("magnet")
