"""Any algorithm's exact dynamics on a batch of matrix games, without Lightning: the theory reference.

The algorithm object is the one ``fit`` uses, schedule included (``end_step``), on a ``TabularPolicy``
network; one batched tensor program advances thousands of games at once, on whatever device P lives on.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from lit_nash.games.dynamics import normalize, win_rates
from lit_nash.policy.tabular import TabularPolicy


class Simulation(NamedTuple):
    log_pi: Tensor  # final log-policies, (games, K)
    trajectory: Tensor  # log-policies at the recorded steps, (records, games, K)
    steps: Tensor  # the step index of each record (0 = the start)


def simulate(algorithm, P: Tensor, steps: int, ref: Tensor | None = None, init: Tensor | None = None,
             record_every: int = 0) -> Simulation:
    """Run ``algorithm``'s exact dynamics for ``steps`` steps on a batch of games at once.

    ``P`` is (games, K, K) (or one K×K game); ``ref`` the reference logits (default uniform) and
    ``init`` the starting logits (default the reference). The algorithm's step counter restarts at 0.
    ``record_every=n`` keeps every n-th iterate.
    """
    P = torch.as_tensor(P, dtype=torch.float64)
    P = P.unsqueeze(0) if P.dim() == 2 else P
    games, K = P.shape[0], P.shape[-1]
    policy = TabularPolicy(games, K).to(P.device)
    if ref is not None:
        policy.snapshots.take("ref", {"log_probs": normalize(torch.as_tensor(ref, dtype=P.dtype, device=P.device).expand(games, K))})
    start = policy.snapshot("ref") if init is None else torch.as_tensor(init, dtype=P.dtype, device=P.device)
    policy.set_logits(normalize(start.expand(games, K)))

    def oracle(log_pi: Tensor) -> Tensor:
        return win_rates(P, log_pi)

    algorithm.step = 0
    algorithm.prepare(policy)
    records, at = [policy.log_probs().clone()], [0]
    for t in range(1, steps + 1):
        policy.set_logits(algorithm.exact_step(policy, oracle))
        algorithm.end_step(policy)
        if record_every and t % record_every == 0:
            records.append(policy.log_probs().clone())
            at.append(t)
    return Simulation(policy.log_probs(), torch.stack(records), torch.tensor(at))
