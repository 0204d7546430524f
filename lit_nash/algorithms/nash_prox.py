"""Nash Prox (Tiapkin et al., COLT 2026, "Proximal Point Nash Learning from Human Feedback", arXiv 2505.19731 v2).

Outer loop, the proximal point method on the β-regularized game: π_{k+1} is the NE of
max_π min_π' P(π ≻ π') − β·KL(π‖μ) − (1/η)·KL(π‖π_k) (and the same for π'). The two KL terms are one,
τ'·KL(π‖ν_k) + const, toward the geometric mixture ν_k ∝ μ^{β/τ'}·π_k^{1/(ητ')} with τ' = β + 1/η: each prox
step is the τ'-regularized game toward ν_k, whose NE is π*_{τ'}(ν_k); π*_β(μ) is the outer fixed point.

Inner solver [I]: online-IPO (OMD) self-play steps on that game, ℓ' = (1 − η_in·τ')·ℓ + η_in·τ'·log ν_k + η_in·P·π_t,
for ``inner_steps`` iterations; then the anchor π_k is refreshed to the policy (COMAL's reset, ``Algorithm.due``).

Practical loss [I]: online IPO's (``lit_nash.algorithms.online_ipo``, variant 1 by default) on the inner game:
h = ℓ_θ − (β/τ')·ℓ_ref − (1/(ητ'))·ℓ_anchor, τ'²·(Δh − ΔP/τ')². The inner step is the learning rate.
"""

from lit_nash.algorithms.base import REDUCTIONS, Algorithm
from lit_nash.algorithms.losses import anchored_log_ratio, squared_regression
from lit_nash.algorithms.online_ipo import OnlineIPO
from lit_nash.games import dynamics as D
from lit_nash.validate import positive

ANCHOR = "anchor"  # π_k, the prox center


class NashProx(Algorithm):
    name = "nash_prox"
    converges_to = "regularized NE"  # π*_β of the reference: the anchor only centres each prox step
    iterate = "last"  # the paper's claim: last-iterate convergence

    def __init__(self, eta: float = 10.0, tau: float = 0.1, inner_steps: int = 5, inner_eta: float = 1.0,
                 variant: int = 1, k: int = 1, proposal_temperature: float = 2.0, proposal_top_k: int = 10,
                 logprob_reduction: str = "mean"):
        super().__init__(eta, tau)
        self.inner_steps = self.count("inner_steps", inner_steps, 1, "iterations per prox step")
        self.inner_eta = positive(f"algo={self.name}: inner_eta", inner_eta)
        if self.inner_eta * self.coefficient > 1:
            raise ValueError(f"algo={self.name}: inner_eta*(tau + 1/eta) must be <= 1 (the weight on log ν), "
                             f"got {self.inner_eta * self.coefficient}")
        if variant not in (1, 2):
            raise ValueError(f"algo={self.name}: variant must be 1 or 2 (online IPO's loss), got {variant}")
        self.k = self.count("k", k, 1, "(y, y') pairs per prompt")
        self.check_proposal(proposal_temperature, proposal_top_k)
        self.logprob_reduction = self.choose("logprob_reduction", logprob_reduction, REDUCTIONS)
        self.variant, self.proposal_temperature, self.proposal_top_k = variant, proposal_temperature, proposal_top_k
        self._ipo = OnlineIPO(self.inner_eta, self.coefficient, variant, self.k, proposal_temperature, proposal_top_k,
                              "policy", logprob_reduction)  # the inner game's online IPO: its rollout, target ΔP/τ'

    @property
    def coefficient(self) -> float:
        """τ' = β + 1/η, the inner game's KL coefficient toward ν_k."""
        return self.tau + 1 / self.eta

    def weights(self) -> tuple[float, float]:
        """(β/τ', 1/(ητ')): the exponents of μ and π_k in ν_k; they sum to 1."""
        return self.tau / self.coefficient, 1 / (self.eta * self.coefficient)

    def prepare(self, policy):
        if not policy.has_snapshot(ANCHOR):
            policy.refresh_snapshot(ANCHOR)

    def exact_step(self, policy, win_rates):
        l = policy.log_probs()
        (a, b), tau = self.weights(), self.coefficient
        log_nu = a * policy.snapshot("ref") + b * policy.snapshot(ANCHOR)
        return D.omd(l, win_rates(l), self.inner_eta, tau, log_nu)

    def rollout(self, rollouts, prompt):
        rollout = self._ipo.rollout(rollouts, prompt)  # target ΔP/τ', ℓ_ref of the pair
        rollout.anchors.update(rollouts.anchors(prompt, rollout.responses, [ANCHOR], self.logprob_reduction))
        return rollout

    def loss(self, rollout, logp):
        """Online IPO's square loss in reward units, τ'²·(Δh − ΔP/τ')², with log ν_k in the reference's place."""
        a, b = self.weights()
        h = anchored_log_ratio(logp, [(a, rollout.anchors["ref"]), (b, rollout.anchors[ANCHOR])])
        return self.coefficient**2 * squared_regression(rollout.difference(h), rollout.target)

    def schedule(self, policy):
        if self.due(self.inner_steps):  # the prox step is done: π_k ← the policy
            policy.refresh_snapshot(ANCHOR)
