"""Online IPO / OMD (Calandriello et al. 2024): mirror descent with a linearized KL to the reference.

Exact form: l' = (1−ητ)·l + ητ·log μ + η·P·π_t (ALGORITHMS.md §2.3).

Practical loss (τ = β), with h = ℓ_θ − ℓ_ref:
* variant 1: y, y' from a full-support proposal (the policy at ``proposal_temperature`` / ``proposal_top_k``),
  y'' ~ π_t; β²·(Δh − [P(y≻y'') − P(y'≻y'')]/β)². One SGD step of lr on the exact version of this loss over
  tabular logits is the OMD step with η = 4·lr·β/K (tests/ladder/test_losses.py).
* variant 2: y, y' ~ π_t; β²·(Δh − [P(y≻y') − ½]/β)².

The factor β² (the loss in reward units; see ``loss``) is lit_nash's, not the paper's.
"""

import torch

from lit_nash.algorithms.base import REDUCTIONS, Algorithm
from lit_nash.algorithms.losses import anchored_log_ratio, squared_regression
from lit_nash.games import dynamics as D
from lit_nash.generation.base import SamplingGroup
from lit_nash.rollout import Rollout


class OnlineIPO(Algorithm):
    name = "online_ipo"

    def __init__(self, eta: float = 1.0, tau: float = 0.1, variant: int = 1, k: int = 1, proposal_temperature: float = 2.0,
                 proposal_top_k: int = 10, opponent: str = "policy", logprob_reduction: str = "mean"):
        super().__init__(eta, tau)
        if variant not in (1, 2):
            raise ValueError(f"algo={self.name}: variant must be 1 or 2, got {variant}")
        self.k = self.count("k", k, 1, "(y, y') pairs per prompt")
        self.check_proposal(proposal_temperature, proposal_top_k)
        self.opponent = self.choose("opponent", opponent, ("policy", "mixture"))  # where y'' comes from
        self.logprob_reduction = self.choose("logprob_reduction", logprob_reduction, REDUCTIONS)
        self.variant = variant
        self.proposal_temperature, self.proposal_top_k = proposal_temperature, proposal_top_k

    def exact_step(self, policy, win_rates):
        l = policy.log_probs()
        return D.omd(l, win_rates(l), self.eta, self.tau, policy.snapshot("ref"))

    def rollout(self, rollouts, prompt, source: str = "policy", mixture_coef: float = 0.0):
        """k pairs per prompt, stored as responses (N, 2k): y in the first k columns, y' in the last k (the
        pairs (i, k + i)); y'' is labeled against both and never scored.
        ``source`` samples them (EGPO's second call: the half step); y'' comes from ``self.opponent``."""
        k = self.k
        if self.variant == 1:
            opponent = source if self.opponent == "policy" else self.opponent
            pair, third = rollouts.sample(prompt, [  # one decoding loop where the sources share a model
                SamplingGroup(k=2 * k, source=source, temperature=self.proposal_temperature, top_k=self.proposal_top_k),
                SamplingGroup(k=k, source=opponent, mixture_coef=mixture_coef),
            ])
            # y and y' both meet y'' in one preference call: a reward model scores each distinct response once
            p = rollouts.label(prompt, pair, torch.cat([third, third], dim=1))
            target, samples = p[:, :k] - p[:, k:], {"proposal": pair, "opponent": third}
        else:
            (pair,) = rollouts.sample(prompt, [SamplingGroup(k=2 * k, source=source)])
            p = rollouts.label(prompt, pair[:, :k], pair[:, k:])
            target, samples = p - 0.5, {"policy": pair}
        i = torch.arange(k, device=pair.device)
        pairs = torch.stack([i, i + k], dim=-1).expand(len(prompt), k, 2)  # (y, y') of each pair
        return Rollout(prompt=prompt, responses=pair, pairs=pairs, reduction=self.logprob_reduction, p=p,
                       target=target / self.tau, anchors=rollouts.anchors(prompt, pair, ["ref"], self.logprob_reduction),
                       samples=samples)

    def loss(self, rollout, logp):
        """The square loss in reward units, (β·Δh − ΔP)² = β²·(Δh − ΔP/β)²: the implicit reward β·log(π_θ/π_ref)
        of DPO and IPO regressed onto the preference difference. The paper's (Δh − ΔP/β)² is 1/β² of it: the
        same minimizer and, under Adam, the same steps; under SGD it makes one learning rate a step of the same
        size for every algorithm (docs/conventions.md §8, "Step size")."""
        h = anchored_log_ratio(logp, [(1.0, rollout.anchors["ref"])])
        return self.tau**2 * squared_regression(rollout.difference(h), rollout.target)
