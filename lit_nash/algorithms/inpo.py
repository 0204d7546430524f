"""INPO (Zhang et al. 2025): no-regret OMD on the regularized game against the previous iterate.

Paper form: π_{t+1} ∝ π_ref^{τ_p/η_p} · π_t^{1−τ_p/η_p} · exp(P(y ≻ π_t)/η_p), i.e. the OMD operator
with step eta = 1/η_p and tau = τ_p (ALGORITHMS.md §2.9). Converges last-iterate to π*_τ only.

Practical loss: k samples per prompt from π_t, one (winner, loser) pair per prompt (knockout tournament
by default), dropped unless P(w ≻ l) > ½; h = Δℓ_θ − r·Δℓ_ref − (1 − r)·Δℓ_t with r = ητ, regressed to
the constant 1/(2η_p) = eta/2, or to the soft label (P(w ≻ l) − ½)·eta, whose minimizer is the OMD
iterate (tests/algorithms/test_losses.py). MNPO and COMAL reuse ``pair_rollout`` and ``pair_loss``.
"""

import torch

from lit_nash.algorithms.base import REDUCTIONS, Algorithm, check_choice, check_count
from lit_nash.algorithms.losses import anchored_log_ratio, first_forward, squared_regression
from lit_nash.games import dynamics as D
from lit_nash.rollout import PAIR_SELECTIONS, gather, label_all_pairs, select_pairs

TARGETS = ("constant", "soft")


class INPO(Algorithm):
    name = "inpo"

    def __init__(self, eta: float = 1.0, tau: float = 0.1, k: int = 8, pairs: str = "tournament",
                 target: str = "constant", logprob_reduction: str = "sum"):
        super().__init__(eta, tau)
        if self.eta * self.tau > 1:
            raise ValueError(f"algo={self.name}: eta*tau = τ_p/η_p must be <= 1, got {self.eta * self.tau}")
        k = check_pair_settings(self.name, k, pairs, target, logprob_reduction)
        self.k, self.pairs, self.target, self.logprob_reduction = k, pairs, target, logprob_reduction

    def exact_step(self, policy, win_rates):
        l = policy.log_probs()
        return D.omd(l, win_rates(l), self.eta, self.tau, policy.snapshot("ref"))

    def rollout(self, policy, prompt):
        return pair_rollout(policy, prompt, self, anchors=["ref"])

    def loss(self, policy, batch):
        r = self.eta * self.tau
        return pair_loss(policy, batch, self, [(r, "ref"), (1 - r, "prev")])


def check_pair_settings(algo: str, k: int, pairs: str, target: str, logprob_reduction: str = "sum") -> int:
    """k (samples per prompt, all pairs labeled: at least 2), the pair selection, the target; returns k."""
    k = check_count("k", k, algo, 2, "samples per prompt, all pairs labeled")
    if pairs not in ("all", *PAIR_SELECTIONS):
        raise ValueError(f"algo={algo}: pairs must be one of {['all', *PAIR_SELECTIONS]}, got {pairs!r}")
    if pairs == "all" and target != "soft":
        raise ValueError(f"algo={algo}: pairs=all needs target=soft (every pair carries its own label)")
    if target not in TARGETS:
        raise ValueError(f"algo={algo}: target must be one of {list(TARGETS)}, got {target!r}")
    check_choice("logprob_reduction", logprob_reduction, REDUCTIONS, algo)
    return k


def pair_rollout(policy, prompt, algo, anchors):
    """k samples from π_t, all pairs labeled, one selected pair per prompt (or every pair, ``pairs=all``:
    an unbiased estimate of the exact on-policy loss), and the log-probs of each snapshot in ``anchors``
    computed once, without grad. π_t's own log-probs (``prev``) come from the loss's first forward."""
    samples = policy.sample(prompt, algo.k)
    P = label_all_pairs(policy.preference, prompt, samples)
    if algo.pairs == "all":
        i, j = torch.triu_indices(algo.k, algo.k, offset=1, device=samples.device)
        prompt = prompt.repeat_interleave(len(i))
        pair = torch.stack([samples[:, i], samples[:, j]], dim=2).flatten(0, 1)  # (N·m, 2, ...)
        p = P[:, i, j].flatten()
    else:
        w, l = select_pairs(P, algo.pairs)
        pair = torch.cat([gather(samples, w), gather(samples, l)], dim=1)
        p = P[torch.arange(len(prompt)), w, l]
    batch = {"prompt": prompt, "pair": pair, "p": p, "keep": (p > 0.5).to(p.dtype)}
    for source in anchors:
        batch[source] = policy.response_log_probs(prompt, pair, source=source, reduction=algo.logprob_reduction)
    return batch


def pair_loss(policy, batch, algo, anchors):
    """``anchors`` are (weight, key of batch) pairs; the key "prev" is π_t at sampling time."""
    logp = policy.response_log_probs(batch["prompt"], batch["pair"], reduction=algo.logprob_reduction)
    first_forward(batch, logp)
    h = anchored_log_ratio(logp, [(w, batch[key]) for w, key in anchors])
    if algo.target == "constant":
        return squared_regression(h[:, 0] - h[:, 1], torch.full_like(batch["p"], algo.eta / 2), batch["keep"])
    # soft labels; an exact batch (every pair) carries the on-policy pair weights π_t(y)·π_t(y')
    return squared_regression(h[:, 0] - h[:, 1], (batch["p"] - 0.5) * algo.eta, batch.get("weight"))
