"""COMAL (Liu et al. 2025): the conceptual prox method around any regularized solver.

Exact form: the inner solver (INPO's OMD step by default, or the exact prox) plays the game regularized
toward an anchor; every ``reset_every`` steps the anchor is reset to the current policy. KL(π*‖anchor)
never increases, so the last iterate converges to an exact NE for any τ > 0 (ALGORITHMS.md §2.8).
"""

from lit_nash.algorithms.base import Algorithm, check_period
from lit_nash.games import dynamics as D

INNER = {"omd": D.omd, "prox": D.prox}


class COMAL(Algorithm):
    name = "comal"

    def __init__(self, eta: float = 1.0, tau: float = 0.1, reset_every: int | None = 100, inner: str = "omd"):
        super().__init__(eta, tau)
        if inner not in INNER:
            raise ValueError(f"algo={self.name}: inner must be one of {sorted(INNER)}, got {inner!r}")
        self.reset_every = check_period("reset_every", reset_every, self.name)
        self.inner = inner

    def prepare(self, policy):
        if not policy.has_snapshot("anchor"):
            policy.refresh_snapshot("anchor")

    def exact_step(self, policy, win_rates):
        l = policy.log_probs()
        return INNER[self.inner](l, win_rates(l), self.eta, self.tau, policy.snapshot("anchor"))

    def schedule(self, policy):
        if D.is_reset_step(self.step, self.reset_every):
            policy.refresh_snapshot("anchor")
