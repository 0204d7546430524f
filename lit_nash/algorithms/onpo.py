"""ONPO, optimistic Nash policy optimization (Zhang et al. 2025, arXiv 2502.16852): optimistic online mirror
descent on the KL-regularized game.

Exact form [I]: ℓ_{t+1} = (1 − ητ)·ℓ_t + ητ·log μ + η·(2·g(π_t) − g(π_{t−1})), INPO's OMD step on the optimistic
win rates (the predictor M_t = g(π_{t−1}) of OOMD's two-sequence form folded into one sequence). The claim is
an O(1/T) duality gap of the average iterate π̄_T, against O(1/√T) for plain OMD (INPO). The previous win
rates are kept in the algorithm's state, so a checkpoint resumes exactly (``OMWU``).

Practical loss [I]: OMWU's (``lit_nash.algorithms.omwu``) with INPO's anchor in place of π_t alone:
h = ℓ_θ − r·ℓ_ref − (1 − r)·ℓ_t, r = ητ, each pair regressed onto η·[2·(P(y_i≻y_j) − ½) − (ĝ_{t−1}(y_i) −
ĝ_{t−1}(y_j))]; its population minimizer is the exact step above (tests/algorithms/test_onpo.py).
"""

from lit_nash.algorithms.omwu import OMWU
from lit_nash.games import dynamics as D
from lit_nash.validate import positive


class ONPO(OMWU):
    name = "onpo"
    iterate = "average"  # the paper's O(1/T) bound is on DualGap(π̄_T)
    converges_to = "regularized NE"

    def __init__(self, eta: float = 1.0, tau: float = 0.1, k: int = 8, logprob_reduction: str = "sum"):
        super().__init__(eta, k, logprob_reduction)
        self.tau = positive(f"algo={self.name}: tau", tau)
        if self.eta * self.tau > 1:
            raise ValueError(f"algo={self.name}: eta*tau must be <= 1 (the weight on log μ), got {self.eta * self.tau}")

    def optimistic_step(self, l, g, policy):
        return D.omd(l, g, self.eta, self.tau, policy.snapshot("ref"))

    def anchors(self):
        return ["ref"]

    def loss_anchors(self, rollout):
        r = self.eta * self.tau
        return [(r, rollout.anchors["ref"]), (1 - r, rollout.policy_logp)]
