"""EGPO, extragradient preference optimization (Zhou, Fazel, Du 2025).

Exact form: two OMD calls from the same point; the second plays against the half-step policy
(ALGORITHMS.md §2.11). Linear last-iterate convergence to π*_τ where single-call OMD fails.
"""

from functools import partial

from lit_nash.algorithms.base import Algorithm
from lit_nash.games import dynamics as D


class EGPO(Algorithm):
    name = "egpo"

    def __init__(self, eta: float = 1.0, tau: float = 0.1):
        super().__init__(eta, tau)

    def exact_step(self, policy, win_rates):
        op = partial(D.omd, eta=self.eta, tau=self.tau, log_mu=policy.snapshot("ref"))
        full, _half = D.two_call(op, policy.log_probs(), win_rates)
        return full
