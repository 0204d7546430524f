"""INPO (Zhang et al. 2025): no-regret OMD on the regularized game against the previous iterate.

Paper form: π_{t+1} ∝ π_ref^{τ_p/η_p} · π_t^{1−τ_p/η_p} · exp(P(y ≻ π_t)/η_p), i.e. the OMD operator
with step eta = 1/η_p and tau = τ_p (ALGORITHMS.md §2.9). Converges last-iterate to π*_τ only.

Practical loss: k samples per prompt from π_t; h = Δℓ_θ − r·Δℓ_ref − (1 − r)·Δℓ_t with r = ητ. By default
every pair of the k samples is regressed to its soft label (P(w ≻ l) − ½)·eta: an unbiased estimate of
the on-policy loss whose minimizer is the OMD iterate (tests/ladder/test_losses.py). The paper's recipe,
``pairs=tournament target=constant``, trains one (winner, loser) pair per prompt, dropped unless
P(w ≻ l) > ½, regressed to the constant 1/(2η_p) = eta/2; with a preference model that returns
probabilities it sees only which response wins, never by how much, so its fixed point is not π*_τ
(on comal_cycle: the uniform policy, gap 0.0667; docs/algorithms/inpo.md). ``target=soft`` on a selected
pair is refused: selection biases it further. MNPO and COMAL reuse ``pair_rollout`` and ``pair_loss``.
"""

import torch

from lit_nash.algorithms.base import MAX_K_ALL_PAIRS, REDUCTIONS, Algorithm
from lit_nash.algorithms.losses import anchored_log_ratio, squared_regression
from lit_nash.games import dynamics as D
from lit_nash.generation.base import SamplingGroup
from lit_nash.rollout import PAIR_SELECTIONS, Rollout, all_pairs, gather, same_response, select_pairs

TARGETS = ("constant", "soft")


class INPO(Algorithm):
    name = "inpo"

    def __init__(self, eta: float = 1.0, tau: float = 0.1, k: int = 8, pairs: str = "all",
                 target: str = "soft", logprob_reduction: str = "sum"):
        super().__init__(eta, tau)
        if self.eta * self.tau > 1:
            raise ValueError(f"algo={self.name}: eta*tau = τ_p/η_p must be <= 1, got {self.eta * self.tau}")
        self.k = check_pair_settings(self, k, pairs, target, logprob_reduction)
        self.pairs, self.target, self.logprob_reduction = pairs, target, logprob_reduction

    def exact_step(self, policy, win_rates):
        l = policy.log_probs()
        return D.omd(l, win_rates(l), self.eta, self.tau, policy.snapshot("ref"))

    def rollout(self, rollouts, prompt):
        return pair_rollout(rollouts, prompt, self, anchors=["ref"])

    def loss(self, rollout, logp):
        r = self.eta * self.tau
        return pair_loss(rollout, logp, self, [(r, rollout.anchors["ref"]), (1 - r, rollout.policy_logp)])


def check_pair_settings(algo: Algorithm, k: int, pairs: str, target: str, logprob_reduction: str = "sum") -> int:
    """k (samples per prompt, all pairs labeled: at least 2), the pair selection, the target; returns k."""
    k = algo.count("k", k, 2, "samples per prompt, all pairs labeled", MAX_K_ALL_PAIRS)
    algo.choose("pairs", pairs, ["all", *PAIR_SELECTIONS])
    algo.choose("target", target, TARGETS)
    if pairs == "all" and target != "soft":
        raise ValueError(f"algo={algo.name}: pairs=all needs target=soft (every pair carries its own label)")
    if pairs != "all" and target == "soft":
        raise ValueError(f"algo={algo.name}: target=soft needs pairs=all: a soft label is unbiased only on "
                         f"on-policy pairs, and a selected pair ({pairs}) is not one (sampled play on comal_cycle "
                         "ends at duality gap 0.31 with tournament, 0.36 with best_worst; π*_τ's is 0.0245). "
                         "Use pairs=all target=soft (the default), or the paper's selected pair with target=constant")
    algo.choose("logprob_reduction", logprob_reduction, REDUCTIONS)
    return k


def pair_rollout(rollouts, prompt, algo, anchors, distinct: bool = False) -> Rollout:
    """k samples from π_t, all pairs labeled, one selected pair per prompt (or every pair, ``pairs=all``:
    an unbiased estimate of the exact on-policy loss), and the log-probs of each snapshot in ``anchors``
    computed once, without grad. π_t's own log-probs come from the engine's first forward. With
    ``pairs=all`` the rollout holds the k samples once and the k(k − 1)/2 pairs as indices into them, so the
    loss scores k responses per prompt; a selected pair holds its two.

    A selected pair with the constant target is trained only if P̂(w ≻ l) > ½ (INPO's filter). With
    ``distinct`` (COMAL's official construction) identical samples are one candidate, ``best_worst`` and
    ``top2`` rank the distinct candidates, no pair is filtered, and a pair of two identical responses (a
    prompt with fewer than 2 distinct samples) gets weight 0: that prompt contributes no pair."""
    (samples,) = rollouts.sample(prompt, [SamplingGroup(k=algo.k)])
    P = rollouts.label_all_pairs(prompt, samples)
    N = len(prompt)
    if algo.pairs == "all":
        responses, pairs = samples, all_pairs(N, algo.k, samples.device)
        i, j = pairs[0].unbind(-1)
        p, weight = P[:, i, j], None
    else:
        rows = torch.arange(N, device=P.device)
        w, l = select_pairs(P, algo.pairs, samples if distinct else None)
        responses = torch.cat([gather(samples, w), gather(samples, l)], dim=1)
        pairs = torch.tensor([[0, 1]], device=samples.device).expand(N, 1, 2)
        p = P[rows, w, l].unsqueeze(1)
        if distinct:  # no filter; only a response paired with itself is dropped
            weight = (~same_response(samples)[rows, w, l]).to(p.dtype).unsqueeze(1)
        else:  # the constant target trains only pairs whose winner wins (a soft label carries its own sign)
            weight = (p > 0.5).to(p.dtype) if algo.target == "constant" else None
    return Rollout(prompt=prompt, responses=responses, pairs=pairs, reduction=algo.logprob_reduction, p=p,
                   weight=weight, anchors=rollouts.anchors(prompt, responses, anchors, algo.logprob_reduction),
                   samples={"policy": samples})


def pair_loss(rollout: Rollout, logp, algo, anchors) -> torch.Tensor:
    """``anchors`` are (weight, log-probs (N, m)) pairs: h = ℓ_θ − Σ w·ℓ_anchor of each response, regressed
    pairwise (first − second of each of ``rollout.pairs``)."""
    h = rollout.difference(anchored_log_ratio(logp, anchors))
    if algo.target == "constant":
        return squared_regression(h, torch.full_like(rollout.p, algo.eta / 2), rollout.weight)
    # soft labels; an exact rollout (every pair) carries the on-policy pair weights π_t(y)·π_t(y')
    return squared_regression(h, (rollout.p - 0.5) * algo.eta, rollout.weight)
