"""TD-MNPO, multiplayer Nash preference optimization (Wu et al. 2025) with a population of past iterates.

Exact form (the minimizer of MNPO's loss with on-policy pairs, ALGORITHMS.md §2.10):
l' = r·log μ + (1−r)·Σ_j λ_j·l_{t−j} + η·P·π_t with r = ητ; the opponents are the ``len(history_weights)``
most recent iterates (the current one first). One history entry is INPO.
"""

import torch

from lit_nash.algorithms.base import Algorithm
from lit_nash.games import dynamics as D


class MNPO(Algorithm):
    name = "mnpo"

    def __init__(self, eta: float = 1.0, tau: float = 0.1, history_weights=(0.5, 0.5)):
        super().__init__(eta, tau)
        w = [float(x) for x in history_weights]
        if not w or min(w) < 0 or abs(sum(w) - 1) > 1e-6:
            raise ValueError(f"algo={self.name}: history_weights must be non-negative and sum to 1, got {w}")
        if self.eta * self.tau > 1:
            raise ValueError(f"algo={self.name}: r = eta*tau must be <= 1, got {self.eta * self.tau}")
        self.history_weights = w

    def prepare(self, policy):
        if not policy.has_snapshot("history"):
            policy.push_snapshot("history", maxlen=len(self.history_weights))

    def exact_step(self, policy, win_rates):
        l = policy.log_probs()
        history = policy.snapshot("history")  # (n, ..., K), most recent (= current) first
        w = torch.tensor(self.history_weights[: len(history)], dtype=l.dtype, device=l.device)
        anchor = D.history_mixture(history, w / w.sum())
        r = self.eta * self.tau
        return D.normalize(r * policy.snapshot("ref") + (1 - r) * anchor + self.eta * win_rates(l))

    def schedule(self, policy):
        policy.push_snapshot("history", maxlen=len(self.history_weights))
