"""SPPO (Wu et al. 2024): self-play with multiplicative weights, l' = l + η·P·π_t.

No regularization: only the average iterate converges; the last iterate cycles on intransitive games.
Exact form is MWU (ALGORITHMS.md §2.4).
"""

from lit_nash.algorithms.base import Algorithm
from lit_nash.games import dynamics as D


class SPPO(Algorithm):
    name = "sppo"

    def __init__(self, eta: float = 1.0):
        super().__init__(eta)

    def exact_step(self, policy, win_rates):
        l = policy.log_probs()
        return D.mwu(l, win_rates(l), self.eta)
