"""SPPO (Wu et al. 2024): self-play with multiplicative weights, l' = l + η·P·π_t.

No regularization: only the average iterate converges; the last iterate cycles on intransitive games.
Exact form is MWU (ALGORITHMS.md §2.4).

Practical loss: k samples per prompt from π_t, all pairs labeled, P̂(y ≻ π_t) estimated from them
(``win_rate``: ``mean``, the official ``compute_prob.py``'s row mean over all k with the ½ diagonal, or
``leave_one_out``, the mean over the other k − 1); best and worst regress h = ℓ_θ − ℓ_t to η·(P̂ − ½). With
the exact P(y ≻ π_t) as target its minimizer over all responses is the MWU iterate to second order
(tests/ladder/test_losses.py). The row mean is ((k − 1)·leave-one-out + ½)/k, so its targets are
(k − 1)/k of leave-one-out's: β_s = 1/η of the paper is η = 1/β_s with ``mean``, η·(k − 1)/k with
``leave_one_out``.
"""

import torch

from lit_nash.algorithms.base import MAX_K_ALL_PAIRS, REDUCTIONS, Algorithm
from lit_nash.algorithms.losses import squared_regression
from lit_nash.games import dynamics as D
from lit_nash.generation.base import SamplingGroup
from lit_nash.rollout import WIN_RATES, Rollout, gather, win_rate_scores


class SPPO(Algorithm):
    name = "sppo"
    iterate = "average"  # MWU: only the average iterate converges on an intransitive game
    converges_to = "NE"

    def __init__(self, eta: float = 1.0, k: int = 5, logprob_reduction: str = "sum", win_rate: str = "mean"):
        super().__init__(eta)
        self.k = self.count("k", k, 2, "samples per prompt: the best and the worst are trained on", MAX_K_ALL_PAIRS)
        self.logprob_reduction = self.choose("logprob_reduction", logprob_reduction, REDUCTIONS)
        self.win_rate = self.choose("win_rate", win_rate, WIN_RATES)

    def exact_step(self, policy, win_rates):
        l = policy.log_probs()
        return D.mwu(l, win_rates(l), self.eta)

    def rollout(self, rollouts, prompt):
        (samples,) = rollouts.sample(prompt, [SamplingGroup(k=self.k)])
        scores = win_rate_scores(rollouts.label_all_pairs(prompt, samples), self.win_rate)
        best, worst = scores.argmax(-1), scores.argmin(-1)
        pair = torch.cat([gather(samples, best), gather(samples, worst)], dim=1)
        target = self.eta * (torch.cat([scores.gather(1, best[:, None]), scores.gather(1, worst[:, None])], 1) - 0.5)
        return Rollout(prompt=prompt, responses=pair, reduction=self.logprob_reduction, target=target,
                       samples={"policy": samples})

    def loss(self, rollout, logp):
        return squared_regression(logp - rollout.policy_logp, rollout.target)
