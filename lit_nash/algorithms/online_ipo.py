"""Online IPO / OMD (Calandriello et al. 2024): mirror descent with a linearized KL to the reference.

Exact form: l' = (1−ητ)·l + ητ·log μ + η·P·π_t (ALGORITHMS.md §2.3).

Practical loss (τ = β), with h = ℓ_θ − ℓ_ref:
* variant 1: y, y' from a full-support proposal (the policy at ``proposal_temperature`` / ``proposal_top_k``),
  y'' ~ π_t; (Δh − [P(y≻y'') − P(y'≻y'')]/β)². One SGD step of lr on the exact version of this loss over
  tabular logits is the OMD step with ηβ = 4·lr/K (tests/algorithms/test_losses.py).
* variant 2: y, y' ~ π_t; (Δh − [P(y≻y') − ½]/β)².
"""

import torch

from lit_nash.algorithms.base import REDUCTIONS, Algorithm, check_choice, check_count, check_sampling
from lit_nash.algorithms.losses import anchored_log_ratio, squared_regression
from lit_nash.games import dynamics as D
from lit_nash.rollout import label


class OnlineIPO(Algorithm):
    name = "online_ipo"

    def __init__(self, eta: float = 1.0, tau: float = 0.1, variant: int = 1, k: int = 1, proposal_temperature: float = 2.0,
                 proposal_top_k: int = 10, opponent: str = "policy", logprob_reduction: str = "mean"):
        super().__init__(eta, tau)
        if variant not in (1, 2):
            raise ValueError(f"algo={self.name}: variant must be 1 or 2, got {variant}")
        k = check_count("k", k, self.name, 1, "(y, y') pairs per prompt")
        check_sampling(self.name, proposal_temperature, proposal_top_k)
        check_choice("opponent", opponent, ("policy", "mixture"), self.name)
        check_choice("logprob_reduction", logprob_reduction, REDUCTIONS, self.name)
        self.variant, self.k = variant, k
        self.proposal_temperature = proposal_temperature
        self.proposal_top_k = proposal_top_k
        self.opponent = opponent  # where y'' comes from: the policy, or "mixture" (Nash-MD with the IPO loss)
        self.logprob_reduction = logprob_reduction

    def exact_step(self, policy, win_rates):
        l = policy.log_probs()
        return D.omd(l, win_rates(l), self.eta, self.tau, policy.snapshot("ref"))

    def rollout(self, policy, prompt, mixture_coef: float = 0.0):
        """k pairs per prompt, stored as responses (N, 2k): y in the first k columns, y' in the last k."""
        k = self.k
        if self.variant == 1:
            pair, third = policy.sample_groups(prompt, [  # one decoding loop where the sources share a model
                dict(k=2 * k, temperature=self.proposal_temperature, top_k=self.proposal_top_k),
                dict(k=k, source=self.opponent, mixture_coef=mixture_coef),
            ])
            # y and y' both meet y'' in one preference call: a reward model scores each distinct response once
            p = label(policy.preference, prompt, pair, torch.cat([third, third], dim=1))
            target = p[:, :k] - p[:, k:]
        else:
            pair = policy.sample(prompt, 2 * k)
            target = label(policy.preference, prompt, pair[:, :k], pair[:, k:]) - 0.5
        ref = policy.response_log_probs(prompt, pair, source="ref", reduction=self.logprob_reduction)
        return {"prompt": prompt, "pair": pair, "target": target / self.tau, "ref": ref}

    def loss(self, policy, batch):
        logp = policy.response_log_probs(batch["prompt"], batch["pair"], reduction=self.logprob_reduction)
        h = anchored_log_ratio(logp, [(1.0, batch["ref"])])
        return squared_regression(h[:, : self.k] - h[:, self.k :], batch["target"])
