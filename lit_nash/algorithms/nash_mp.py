"""Nash-MP, Nash mirror prox (Tiapkin et al. 2025).

Exact form: two exact prox steps with the same prox center π_k; the second plays against the half
step (ALGORITHMS.md §2.12). Here eta is the prox step s = η_paper/β and tau = β.

Practical step (approximate Nash-MP [I, no official code]): each prox step maximizes
E_{y~π_θ, y'~opponent}[P(y≻y')] − β·KL(π_θ‖π_ref) − (1/η)·KL(π_θ‖π_k) with ``inner_steps`` policy-gradient
steps (Nash-MD-PG's estimator). The half step plays the anchor π_k; the policy is then saved as snapshot
"half_step", parameters and optimizer return to π_k, and the full step plays the half step. The anchor is
refreshed after each iteration. One iteration is 2·inner_steps optimizer steps.
"""

from functools import partial

from lit_nash.algorithms.base import (REDUCTIONS, Algorithm, check_choice, check_count, restore_training_state,
                                     training_state)
from lit_nash.algorithms.losses import policy_gradient
from lit_nash.games import dynamics as D
from lit_nash.rollout import play_against


class NashMP(Algorithm):
    name = "nash_mp"

    def __init__(self, eta: float = 1.0, tau: float = 0.1, inner_steps: int = 1, k: int = 2,
                 logprob_reduction: str = "sum"):
        super().__init__(eta, tau)
        inner_steps = check_count("inner_steps", inner_steps, self.name, 1, "policy-gradient steps per prox step")
        k = check_count("k", k, self.name, 1, "policy samples per prompt")
        check_choice("logprob_reduction", logprob_reduction, REDUCTIONS, self.name)
        self.inner_steps, self.k, self.logprob_reduction = int(inner_steps), k, logprob_reduction

    def prepare(self, policy):
        if not policy.has_snapshot("anchor"):
            policy.refresh_snapshot("anchor")

    def exact_step(self, policy, win_rates):
        op = partial(D.prox, eta=self.eta, tau=self.tau, log_mu=policy.snapshot("ref"))
        full, _half = D.two_call(op, policy.log_probs(), win_rates)
        return full

    def loss(self, policy, batch):
        logp = policy.response_log_probs(batch["prompt"], batch["responses"], reduction=self.logprob_reduction)
        return policy_gradient(logp, batch["p"], [(self.tau, batch["ref"]), (1 / self.eta, batch["anchor"])])

    def _prox_steps(self, policy, prompt, opponent):
        for _ in range(self.inner_steps):
            batch = play_against(policy, prompt, self.k, opponent, ["ref", "anchor"], self.logprob_reduction)
            loss = policy.optimize(partial(self.loss, policy), batch)
        return loss

    def sampled_step(self, policy, prompt, new_round=True):
        # samples from its half step every iteration, so rounds do not apply
        start = training_state(policy)
        self._prox_steps(policy, prompt, opponent="anchor")
        policy.refresh_snapshot("half_step")
        restore_training_state(policy, start)
        return self._prox_steps(policy, prompt, opponent="half_step")

    def schedule(self, policy):
        if policy.has_snapshot("half_step"):  # sampled play: the new iterate is the next prox center
            policy.refresh_snapshot("anchor")
