"""Nash-MP, Nash mirror prox (Tiapkin et al. 2025).

Exact form: two exact prox steps with the same prox center π_k; the second plays against the half
step (ALGORITHMS.md §2.12). Here eta is the prox step s = η_paper/β and tau = β.
"""

from functools import partial

from lit_nash.algorithms.base import Algorithm
from lit_nash.games import dynamics as D


class NashMP(Algorithm):
    name = "nash_mp"

    def __init__(self, eta: float = 1.0, tau: float = 0.1):
        super().__init__(eta, tau)

    def exact_step(self, policy, win_rates):
        op = partial(D.prox, eta=self.eta, tau=self.tau, log_mu=policy.snapshot("ref"))
        full, _half = D.two_call(op, policy.log_probs(), win_rates)
        return full
