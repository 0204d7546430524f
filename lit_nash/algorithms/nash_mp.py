"""Nash-MP, Nash mirror prox (Tiapkin et al. 2025).

Exact form: two exact prox steps with the same prox center π_k; the second plays against the half
step (ALGORITHMS.md §2.12). Here eta is the prox step s = η_paper/β and tau = β.

Practical step (approximate Nash-MP [I, no official code]): each prox step maximizes
E_{y~π_θ, y'~opponent}[P(y≻y')] − β·KL(π_θ‖π_ref) − (1/η)·KL(π_θ‖π_k) with ``inner_steps`` policy-gradient
steps (Nash-MD-PG's estimator). The first call plays the anchor π_k; its result is kept as the snapshot
"half_step", parameters and optimizer return to π_k, and the second call plays the half step
(``lit_nash.algorithms.two_call``). The anchor is refreshed after each iteration. One iteration is
2·inner_steps optimizer steps, all on the same prompts.

Moving prox center (``center_rate`` < 1, an option [I]): the prox center is an exponential moving average of
the iterates in parameter space, c ← (1 − rate)·c + rate·θ_{k+1} after each iteration, while the first
call still plays π_k (the snapshot "iterate"). A secondary summary of the paper's LLM experiments says the
proximal reference moves as an EMA; the paper's text that would confirm it, and its rate, could not be
read (docs/algorithms/nash_mp.md). ``center_rate`` 1 is pure mirror prox, the default. π*_τ is the fixed
point of both: at c = π_k = π*_τ each prox step returns π*_τ.
"""

from functools import partial

from lit_nash.algorithms.base import REDUCTIONS
from lit_nash.algorithms.losses import policy_gradient
from lit_nash.algorithms.two_call import HALF_STEP, TwoCallAlgorithm
from lit_nash.games import dynamics as D
from lit_nash.validate import in_unit_interval, integer

ITERATE = "iterate"  # π_k, the first call's opponent when the prox center moves as an EMA


class NashMP(TwoCallAlgorithm):
    name = "nash_mp"

    def __init__(self, eta: float = 1.0, tau: float = 0.1, inner_steps: int = 1, k: int = 2,
                 logprob_reduction: str = "sum", center_rate: float = 1.0):
        inner_steps = integer(f"algo={self.name}: inner_steps", inner_steps, 1, "policy-gradient steps per prox step")
        super().__init__(eta, tau, half_steps=inner_steps)
        self.inner_steps = inner_steps
        self.k = self.count("k", k, 1, "policy samples per prompt")
        self.logprob_reduction = self.choose("logprob_reduction", logprob_reduction, REDUCTIONS)
        self.center_rate = in_unit_interval(f"algo={self.name}: center_rate", center_rate, open_left=True,
                                            note=" (EMA rate of the prox center; 1 is pure mirror prox)")

    @property
    def moving_center(self) -> bool:
        return self.center_rate < 1.0

    def prepare(self, policy):
        for name in ("anchor", ITERATE) if self.moving_center else ("anchor",):
            if not policy.has_snapshot(name):
                policy.refresh_snapshot(name)

    def exact_step(self, policy, win_rates):
        op = partial(D.prox, eta=self.eta, tau=self.tau, log_mu=policy.snapshot("ref"))
        if not self.moving_center:
            full, _half = D.two_call(op, policy.log_probs(), win_rates)
            return full
        center = policy.snapshot("anchor")
        half = op(center, win_rates(policy.log_probs()))
        return op(center, win_rates(half))

    def prompt_repeat(self, sampled):
        return self.steps_per_iteration(sampled)

    def rollout(self, rollouts, prompt):
        opponent = HALF_STEP if self.two_call.second_call else (ITERATE if self.moving_center else "anchor")
        return rollouts.play_against(prompt, self.k, opponent, ["ref", "anchor"], self.logprob_reduction)

    def loss(self, rollout, logp):
        kl_terms = [(self.tau, rollout.anchors["ref"]), (1 / self.eta, rollout.anchors["anchor"])]
        kl_terms = [(c, rollout.sequence(anchor)) for c, anchor in kl_terms]  # sequence log-probs whatever the reduction
        return policy_gradient(logp, rollout.p, kl_terms, rollout.sequence(logp))

    def schedule(self, policy):
        if self.moving_center:  # exact and sampled play: the center follows the iterates
            policy.blend_snapshot("anchor", self.center_rate)
            if policy.has_snapshot(HALF_STEP):
                policy.refresh_snapshot(ITERATE)
        elif policy.has_snapshot(HALF_STEP):  # sampled play: the new iterate is the next prox center
            policy.refresh_snapshot("anchor")
