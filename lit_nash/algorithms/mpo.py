"""MPO, magnetic preference optimization (Wang et al. 2025): MMD whose magnet follows the policy.

Exact form: the prox step toward the magnet μ_k; every ``magnet_every`` steps the magnet becomes the
current policy. The regularized equilibria then converge to the NE of the *original* game
(a proximal-point argument, ALGORITHMS.md §2.7).

Practical loss [I, no official code]: maximize E_{y~π_θ}[P(y ≻ y')] − τ·KL(π_θ‖μ_k) − (1/η)·KL(π_θ‖π_t),
y' ~ π_t, by REINFORCE with baseline ½ and the KL terms as score-function terms (``variant: mpo``), or with
the KL terms folded into the reward (``variant: rt``, MPO-RT): r̃ = P(y≻y') − τ·log(π_θ/μ_k) − (1/η)·log(π_θ/π_t).
The 1/η coefficient makes the prox step of the exact form the population optimum of one outer step.
The proximal term has zero gradient at π_θ = π_t, so it acts only across several gradient steps on one
rollout (``rollout.epochs_per_round`` > 1); with one step per rollout the learning rate is the step size.
Those later steps score π_t's samples at θ ≠ θ_t, so each response's term is weighted by sg(π_θ/π_t)(y)
(1 on the first): the expected gradient is then the objective's at θ, and a round's epochs converge to the
prox step itself (tests/algorithms/test_policy_gradient.py; unweighted they stop elsewhere).
With one reward per sequence, MPO-RT's folded reward gives the same gradient as MPO; the variants differ
only with per-token rewards (token-level credit, as in Safe-RLHF's PPO), which lit_nash does not implement.
"""

from lit_nash.algorithms.base import REDUCTIONS, Algorithm
from lit_nash.algorithms.losses import importance_weighted, policy_gradient
from lit_nash.games import dynamics as D


class MPO(Algorithm):
    name = "mpo"
    converges_to = "NE"  # the magnet follows the policy: the regularized equilibria converge to the original NE
    magnet = "magnet"

    def __init__(self, eta: float = 1.0, tau: float = 0.1, magnet_every: int | None = 100, k: int = 2,
                 variant: str = "mpo", logprob_reduction: str = "sum"):
        super().__init__(eta, tau)
        if variant not in ("mpo", "rt"):
            raise ValueError(f"algo={self.name}: variant must be 'mpo' or 'rt', got {variant!r}")
        self.magnet_every = self.period("magnet_every", magnet_every)
        self.k = self.count("k", k, 1, "policy samples per prompt")
        self.logprob_reduction = self.choose("logprob_reduction", logprob_reduction, REDUCTIONS)
        self.variant = variant

    def prepare(self, policy):
        if not policy.has_snapshot("magnet"):
            policy.refresh_snapshot("magnet")

    def exact_step(self, policy, win_rates):
        l = policy.log_probs()
        return D.prox(l, win_rates(l), self.eta, self.tau, policy.snapshot(self.magnet))

    def rollout(self, rollouts, prompt):
        return rollouts.play_against(prompt, self.k, "policy", [self.magnet], self.logprob_reduction)

    def loss(self, rollout, logp):
        seq = rollout.sequence(logp)  # the KL terms' score function: sequence log-probs whatever the reduction
        pi_t = rollout.sequence(rollout.policy_logp)  # who sampled y: π_t, reused by a round's later epochs
        kl_terms = [(self.tau, rollout.sequence(rollout.anchors[self.magnet])), (1 / self.eta, pi_t)]
        if self.variant == "rt":  # r̃ = P(y≻y') − Σ c·log(π_θ/anchor)(y), each part times its own score
            folded = sum(c * (seq.detach() - anchor) for c, anchor in kl_terms)
            return importance_weighted(-(rollout.p - 0.5) * logp + folded * seq, seq, pi_t).mean()
        return policy_gradient(logp, rollout.p, kl_terms, seq, behavior=pi_t)

    def schedule(self, policy):
        if self.due(self.magnet_every):
            policy.refresh_snapshot("magnet")
