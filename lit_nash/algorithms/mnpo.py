"""TD-MNPO, multiplayer Nash preference optimization (Wu et al. 2025) with a population of past iterates.

Exact form (the minimizer of MNPO's loss with on-policy pairs, ALGORITHMS.md §2.10):
l' = r·log μ + (1−r)·Σ_j λ_j·l_{t−j} + η·P·π_t with r = ητ; the opponents are the ``len(history_weights)``
most recent iterates (the current one first). One history entry is INPO.

Practical loss: INPO's pair loss with the history as anchor, h = Δℓ_θ − r·Δℓ_ref − (1−r)·Σ_j λ_j·Δℓ_{t−j},
on every pair of k = 5 samples with soft labels (unbiased; see INPO), per-token mean log-probs. The
official trainer's best-vs-worst pair with the constant target is ``pairs=best_worst target=constant``
(biased with a probability-valued preference model: docs/algorithms/mnpo.md).
"""

import torch

from lit_nash.algorithms.base import Algorithm
from lit_nash.algorithms.inpo import check_pair_settings, pair_loss, pair_rollout
from lit_nash.games import dynamics as D


class MNPO(Algorithm):
    name = "mnpo"

    def __init__(self, eta: float = 1.0, tau: float = 0.1, history_weights=(0.5, 0.5), k: int = 5,
                 pairs: str = "all", target: str = "soft", logprob_reduction: str = "mean"):
        super().__init__(eta, tau)
        try:
            w = [float(x) for x in history_weights]
        except (TypeError, ValueError):
            raise ValueError(f"algo={self.name}: history_weights must be a list of numbers, got {history_weights!r}") from None
        if not w or min(w) < 0 or abs(sum(w) - 1) > 1e-6 or any(x != x for x in w):
            raise ValueError(f"algo={self.name}: history_weights must be non-negative and sum to 1, got {w}")
        if self.eta * self.tau > 1:
            raise ValueError(f"algo={self.name}: r = eta*tau must be <= 1, got {self.eta * self.tau}")
        self.k = check_pair_settings(self, k, pairs, target, logprob_reduction)
        self.history_weights = w
        self.pairs, self.target, self.logprob_reduction = pairs, target, logprob_reduction

    def prepare(self, policy):
        if not policy.has_snapshot("history"):
            policy.push_snapshot("history", maxlen=len(self.history_weights))

    def _weights(self, available: int) -> list[float]:
        w = self.history_weights[:available]
        return [x / sum(w) for x in w]

    def history(self) -> list[str]:
        """The history entries the step anchors on, newest first: as many as there are iterates so far."""
        return [f"history/{j}" for j in range(min(self.step + 1, len(self.history_weights)))]

    def exact_step(self, policy, win_rates):
        l = policy.log_probs()
        history = policy.snapshot("history")  # (n, ..., K), most recent (= current) first
        w = torch.tensor(self._weights(len(history)), dtype=l.dtype, device=l.device)
        anchor = D.history_mixture(history, w)
        r = self.eta * self.tau
        return D.normalize(r * policy.snapshot("ref") + (1 - r) * anchor + self.eta * win_rates(l))

    def rollout(self, rollouts, prompt):
        return pair_rollout(rollouts, prompt, self, anchors=["ref", *self.history()])

    def loss(self, rollout, logp):
        r = self.eta * self.tau
        names = [n for n in self.history() if n in rollout.anchors]  # a round's rollout keeps its own history
        anchors = [(r, rollout.anchors["ref"])]
        anchors += [((1 - r) * w, rollout.anchors[n]) for w, n in zip(self._weights(len(names)), names)]
        return pair_loss(rollout, logp, self, anchors)

    def schedule(self, policy):
        policy.push_snapshot("history", maxlen=len(self.history_weights))
