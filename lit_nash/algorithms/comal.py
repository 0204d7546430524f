"""COMAL (Liu et al. 2025): the conceptual prox method around any regularized solver.

Exact form: the inner solver (INPO's OMD step by default, or the exact prox) plays the game regularized
toward an anchor; every ``reset_every`` steps the anchor is reset to the current policy. KL(π*‖anchor)
never increases, so the last iterate converges to an exact NE for any τ > 0 (ALGORITHMS.md §2.8).

Practical loss: INPO's pair loss with the anchor in the reference's place (the official code's
COMAL+INPO), summed log-probs. By default every pair of the k = 5 samples with its soft label (unbiased;
the reset fixed point is then the NE). ``pairs=top2 target=constant`` is the official pair of yale-nlp/COMAL ``data_processing.py``: of k = 5
samples, identical responses are merged into one candidate (scored by the mean of its copies' win rates
against the others) before ranking, the pair is top-1 vs top-2 of the distinct candidates, and no pair is
filtered on P̂(w ≻ l); its constant target sees only which response wins, so with a probability-valued
preference model its fixed point is not the NE (docs/algorithms/comal.md). A prompt whose k samples hold fewer than 2 distinct responses contributes no pair
(weight 0). ``pairs=tournament`` drops only a pair of identical responses.
"""

from lit_nash.algorithms.base import Algorithm
from lit_nash.algorithms.inpo import check_pair_settings, pair_loss, pair_rollout
from lit_nash.games import dynamics as D

INNER = {"omd": D.omd, "prox": D.prox}


class COMAL(Algorithm):
    name = "comal"
    converges_to = "NE"  # the anchor resets: the prox iterates converge to the original NE

    def __init__(self, eta: float = 1.0, tau: float = 0.1, reset_every: int | None = 100, inner: str = "omd",
                 k: int = 5, pairs: str = "all", target: str = "soft", logprob_reduction: str = "sum"):
        super().__init__(eta, tau)
        if inner not in INNER:
            raise ValueError(f"algo={self.name}: inner must be one of {sorted(INNER)}, got {inner!r}")
        if self.eta * self.tau > 1:
            raise ValueError(f"algo={self.name}: eta*tau must be <= 1, got {self.eta * self.tau}")
        self.k = check_pair_settings(self, k, pairs, target, logprob_reduction)
        self.reset_every = self.period("reset_every", reset_every)
        self.inner = inner
        self.pairs, self.target, self.logprob_reduction = pairs, target, logprob_reduction

    def prepare(self, policy):
        if not policy.has_snapshot("anchor"):
            policy.refresh_snapshot("anchor")

    def exact_step(self, policy, win_rates):
        l = policy.log_probs()
        return INNER[self.inner](l, win_rates(l), self.eta, self.tau, policy.snapshot("anchor"))

    def rollout(self, rollouts, prompt):
        return pair_rollout(rollouts, prompt, self, anchors=["anchor"], distinct=True)

    def loss(self, rollout, logp):
        r = self.eta * self.tau
        return pair_loss(rollout, logp, self, [(r, rollout.anchors["anchor"]), (1 - r, rollout.policy_logp)])

    def schedule(self, policy):
        if self.due(self.reset_every):
            policy.refresh_snapshot("anchor")
