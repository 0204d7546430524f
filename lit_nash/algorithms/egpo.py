"""EGPO, extragradient preference optimization (Zhou, Fazel, Du 2025).

Exact form: two OMD calls from the same point; the second plays against the half-step policy
(ALGORITHMS.md §2.11). Linear last-iterate convergence to π*_τ where single-call OMD fails.

Practical step: the online-IPO (variant 1) loss in parameter space, EGPO's schedule: save θ_t and the
optimizer state, step to θ_{t+½}, sample y, y', y'' from θ_{t+½}, restore θ_t and its optimizer state
bit for bit, and step on those samples. One iteration is two optimizer steps, as in the paper.
"""

from functools import partial

from lit_nash.algorithms.base import (REDUCTIONS, Algorithm, check_choice, check_count, check_sampling,
                                     restore_training_state, training_state)
from lit_nash.algorithms.online_ipo import OnlineIPO
from lit_nash.games import dynamics as D


class EGPO(Algorithm):
    name = "egpo"

    def __init__(self, eta: float = 1.0, tau: float = 0.1, k: int = 1, proposal_temperature: float = 2.0,
                 proposal_top_k: int = 10, logprob_reduction: str = "mean"):
        super().__init__(eta, tau)
        k = check_count("k", k, self.name, 1, "(y, y') pairs per prompt per half step")
        check_sampling(self.name, proposal_temperature, proposal_top_k)
        check_choice("logprob_reduction", logprob_reduction, REDUCTIONS, self.name)
        self.k = k
        self.proposal_temperature = proposal_temperature
        self.proposal_top_k = proposal_top_k
        self.logprob_reduction = logprob_reduction
        self._ipo = OnlineIPO(eta, tau, 1, k, proposal_temperature, proposal_top_k, "policy", logprob_reduction)

    def exact_step(self, policy, win_rates):
        op = partial(D.omd, eta=self.eta, tau=self.tau, log_mu=policy.snapshot("ref"))
        full, _half = D.two_call(op, policy.log_probs(), win_rates)
        return full

    def sampled_step(self, policy, prompt, new_round=True):
        # samples from its half step every iteration, so rounds do not apply
        loss_of = partial(self._ipo.loss, policy)
        start = training_state(policy)
        policy.optimize(loss_of, self._ipo.rollout(policy, prompt))  # θ_{t+½}
        batch = self._ipo.rollout(policy, prompt)  # samples from the half-step policy
        restore_training_state(policy, start)  # back to θ_t
        return policy.optimize(loss_of, batch)
