"""EGPO, extragradient preference optimization (Zhou, Fazel, Du 2025).

Exact form: two OMD calls from the same point; the second plays against the half-step policy
(ALGORITHMS.md §2.11). Linear last-iterate convergence to π*_τ where single-call OMD fails.

Practical step: the online-IPO (variant 1) loss in parameter space, with EGPO's two-call schedule
(``lit_nash.algorithms.two_call``): from θ_t a step on samples of θ_t gives θ_{t+½}; then, back at θ_t
(parameters and optimizer state), a step on y, y', y'' sampled from θ_{t+½}. One iteration is two
optimizer steps, as in the paper; by default both use the same prompts (``fresh_prompts=true``: a new
prompt batch for each, as the official trainer does).
"""

from functools import partial

from lit_nash.algorithms.base import REDUCTIONS
from lit_nash.algorithms.online_ipo import OnlineIPO
from lit_nash.algorithms.two_call import HALF_STEP, TwoCallAlgorithm
from lit_nash.games import dynamics as D


class EGPO(TwoCallAlgorithm):
    name = "egpo"

    def __init__(self, eta: float = 1.0, tau: float = 0.1, k: int = 1, proposal_temperature: float = 2.0,
                 proposal_top_k: int = 10, logprob_reduction: str = "mean", fresh_prompts: bool = False):
        super().__init__(eta, tau, half_steps=1)
        self.k = self.count("k", k, 1, "(y, y') pairs per prompt per half step")
        self.check_proposal(proposal_temperature, proposal_top_k)
        self.logprob_reduction = self.choose("logprob_reduction", logprob_reduction, REDUCTIONS)
        self.proposal_temperature, self.proposal_top_k = proposal_temperature, proposal_top_k
        self.fresh_prompts = bool(fresh_prompts)
        self._ipo = OnlineIPO(eta, tau, 1, self.k, proposal_temperature, proposal_top_k, "policy", logprob_reduction)

    def exact_step(self, policy, win_rates):
        op = partial(D.omd, eta=self.eta, tau=self.tau, log_mu=policy.snapshot("ref"))
        full, _half = D.two_call(op, policy.log_probs(), win_rates)
        return full

    def prompt_repeat(self, sampled):
        """Optimizer steps that share one prompt batch."""
        return 1 if self.fresh_prompts or not sampled else 2

    def rollout(self, rollouts, prompt):
        return self._ipo.rollout(rollouts, prompt, source=HALF_STEP if self.two_call.second_call else "policy")

    def loss(self, rollout, logp):
        return self._ipo.loss(rollout, logp)
