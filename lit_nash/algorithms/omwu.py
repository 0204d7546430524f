"""OMWU, optimistic multiplicative weights without regularization ("Unregularized Linear Convergence in
Zero-Sum Game from Preference Feedback", 2026; Daskalakis and Panageas 2019; Wei et al. 2021).

Exact form: ℓ_{t+1} = ℓ_t + η·(2·g(π_t) − g(π_{t−1})), g = P·π, the first step plain MWU (g(π_{−1}) = g(π_0)).
The optimistic term, the last win rates' change, is what MWU lacks: where a full-support NE exists the last
iterate converges to the NE of the *original* game, linearly after a burn-in (docs/algorithms/omwu.md). The
previous win-rate vector g(π_{t−1}) is the algorithm's state (``state_dict``): one oracle call per step, and a
resumed run continues exactly.

Practical loss [I]: k samples from π_t, all pairs labeled, and k samples from the previous iterate π_{t−1} (the
history ring ``iterates``, pushed every iteration, so π_{t−1} is the policy one to two iterations ago), each
labeled against every policy sample. h = ℓ_θ − ℓ_t of each response; every pair (y_i, y_j) regresses Δh onto
η·[2·(P(y_i≻y_j) − ½) − (ĝ_{t−1}(y_i) − ĝ_{t−1}(y_j))], ĝ_{t−1}(y) the mean of P(y ≻ z) over the previous
iterate's samples z. Its population minimizer is h = η·(2·g(π_t) − g(π_{t−1})) + c, the exact step
(INPO's soft-label argument; tests/algorithms/test_omwu.py). ONPO (``onpo``) is the same with τ·KL to μ.
"""

from __future__ import annotations

import torch

from lit_nash.algorithms.base import MAX_K_ALL_PAIRS, REDUCTIONS, Algorithm
from lit_nash.algorithms.losses import anchored_log_ratio, squared_regression
from lit_nash.games import dynamics as D
from lit_nash.generation.base import SamplingGroup
from lit_nash.rollout import Rollout, all_pairs

ITERATES = "iterates"  # sampled play: the ring of iteration-start policies, newest first (iterates/1 is π_{t−1})


class OMWU(Algorithm):
    name = "omwu"
    converges_to = "NE"  # the original game's, where a full-support NE exists

    def __init__(self, eta: float = 1.0, k: int = 8, logprob_reduction: str = "sum"):
        super().__init__(eta)
        self.k = self.count("k", k, 2, "samples per prompt from π_t and from π_{t−1}, all pairs labeled", MAX_K_ALL_PAIRS)
        self.logprob_reduction = self.choose("logprob_reduction", logprob_reduction, REDUCTIONS)
        self.previous_win_rates = None  # exact play: g(π_{t−1}), (prompts, K)
        self.sampled = False

    # -- exact play ------------------------------------------------------------------------------
    def optimistic_step(self, l, g, policy):
        """The mirror step on the optimistic win rates ``g`` = 2·g(π_t) − g(π_{t−1}) (ONPO adds the KL to μ)."""
        return D.mwu(l, g, self.eta)

    def exact_step(self, policy, win_rates):
        l = policy.log_probs()
        g = win_rates(l)
        first = self.step == 0 or self.previous_win_rates is None  # a fresh run (``simulate`` restarts at step 0)
        previous = g if first else self.previous_win_rates.to(g)
        self.previous_win_rates = g.detach().clone()
        return self.optimistic_step(l, 2 * g - previous, policy)

    def state_dict(self):
        return {**super().state_dict(), "previous_win_rates": self.previous_win_rates}

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        self.previous_win_rates = state_dict.get("previous_win_rates")

    # -- sampled play ----------------------------------------------------------------------------
    def setup(self, trainer, pl_module, stage):
        self.sampled = bool(getattr(pl_module, "sampled", False))
        super().setup(trainer, pl_module, stage)

    def prepare(self, policy):
        if self.sampled and not policy.has_snapshot(ITERATES):
            policy.push_snapshot(ITERATES, maxlen=2)

    def schedule(self, policy):
        if self.sampled and self.due(1):  # a new iteration: π_{t−1} ← the last iteration's start
            policy.push_snapshot(ITERATES, maxlen=2)

    def anchors(self) -> list[str]:
        """Snapshots the loss reads besides π_t (ONPO: the reference)."""
        return []

    def rollout(self, rollouts, prompt):
        previous = f"{ITERATES}/1" if rollouts.network.has_snapshot(f"{ITERATES}/1") else f"{ITERATES}/0"
        k, N = self.k, len(prompt)
        samples, others = rollouts.sample(prompt, [SamplingGroup(k=k), SamplingGroup(k=k, source=previous)])
        P = rollouts.label_all_pairs(prompt, samples)  # (N, k, k) among π_t's samples
        cross = rollouts.label(prompt, samples.repeat_interleave(k, dim=1), others.repeat(1, k, *[1] * (others.dim() - 2)))
        g_previous = cross.view(N, k, k).mean(-1)  # ĝ_{t−1}(y_i): mean over the previous iterate's samples
        pairs = all_pairs(N, k, samples.device)
        i, j = pairs[0].unbind(-1)
        target = self.eta * (2 * (P[:, i, j] - 0.5) - (g_previous[:, i] - g_previous[:, j]))
        return Rollout(prompt=prompt, responses=samples, pairs=pairs, reduction=self.logprob_reduction,
                       p=P[:, i, j], target=target, lengths=rollouts.lengths(samples),
                       anchors=rollouts.anchors(prompt, samples, self.anchors(), self.logprob_reduction),
                       samples={"policy": samples, "previous": others})

    def loss(self, rollout, logp):
        return squared_regression(rollout.difference(anchored_log_ratio(logp, self.loss_anchors(rollout))),
                                  rollout.target, rollout.weight)

    def loss_anchors(self, rollout):
        """(weight, log-probs) of h = ℓ_θ − Σ w·ℓ_anchor: π_t alone (ONPO: r·ℓ_ref + (1 − r)·ℓ_t)."""
        return [(1.0, rollout.policy_logp)]
