"""Shared pieces of an online step: label sampled responses with the preference model, pick pairs.

Sampling itself is the policy's (``policy.sample``: one batched call for all k responses of all prompts);
which sources and pairs a step needs is the algorithm's. What lives here is written once for all of them:

* ``label``: P(a ≻ b | x) for given pairs, checked to be finite and in [0, 1] (an error names the pair);
* ``label_all_pairs``: the k×k matrix of one prompt's samples, asking the model only for i < j;
* ``win_rate_scores`` and ``select_pairs``: SPPO/MNPO best-vs-worst, COMAL top-1 vs top-2, INPO's
  knockout tournament.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lit_nash.guards import NumericalError

PAIR_SELECTIONS = ("best_worst", "top2", "tournament")


def label(preference, prompt: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """P(a ≻ b | prompt) for responses a, b of shape (N, m, ...) → (N, m), validated."""
    return check_probabilities(preference.prob(prompt, a, b), prompt, a, b)


def check_probabilities(p: Tensor, prompt: Tensor, a: Tensor | None = None, b: Tensor | None = None) -> Tensor:
    """``p`` (N, m) itself, if every entry is finite and in [0, 1]; else an error naming the first bad pair."""
    bad = ~torch.isfinite(p) | (p < 0) | (p > 1)
    if bad.any():
        n, m = (int(i) for i in bad.nonzero()[0])
        pair = f" (responses {a[n, m].tolist()} vs {b[n, m].tolist()})" if a is not None and b is not None else ""
        raise NumericalError(f"preference model returned {p[n, m].item()} for prompt {int(prompt[n])}, pair {m}{pair}: "
                         "probabilities must be finite and in [0, 1]")
    return p


def label_all_pairs(preference, prompt: Tensor, responses: Tensor) -> Tensor:
    """P̂[n, i, j] = P(y_i ≻ y_j) among the k samples of each prompt, (N, k, k); only i < j is asked for,
    the rest is 1 − P̂ᵀ and ½ on the diagonal (preferences are constant-sum)."""
    N, k = responses.shape[:2]
    i, j = torch.triu_indices(k, k, offset=1, device=responses.device)
    p = label(preference, prompt, responses[:, i], responses[:, j])
    P = torch.full((N, k, k), 0.5, dtype=p.dtype, device=p.device)
    P[:, i, j] = p
    P[:, j, i] = 1 - p
    return P


def win_rate_scores(P: Tensor) -> Tensor:
    """P̂(y_i ≻ π) estimated by the mean win probability against the other k − 1 samples, (N, k)."""
    k = P.shape[-1]
    return (P.sum(-1) - 0.5) / (k - 1)


def select_pairs(P: Tensor, how: str) -> tuple[Tensor, Tensor]:
    """Indices (winner, loser), each (N,), of one pair per prompt from the labeled k×k matrix."""
    if how == "best_worst":
        scores = win_rate_scores(P)
        return scores.argmax(-1), scores.argmin(-1)
    if how == "top2":
        top = win_rate_scores(P).topk(2, dim=-1).indices
        return top[:, 0], top[:, 1]
    if how == "tournament":
        return _knockout(P, winner=True), _knockout(P, winner=False)
    raise ValueError(f"pair selection must be one of {list(PAIR_SELECTIONS)}, got {how!r}")


def _knockout(P: Tensor, winner: bool) -> Tensor:
    """A knockout bracket in sample order (samples are i.i.d., so the order is random): the winners'
    bracket keeps who wins each match, the losers' bracket keeps who loses it (INPO)."""
    N = P.shape[0]
    rows = torch.arange(N, device=P.device)
    alive = torch.arange(P.shape[-1], device=P.device).expand(N, -1)
    while alive.shape[1] > 1:
        if alive.shape[1] % 2:  # odd one out gets a bye
            bye, alive = alive[:, -1:], alive[:, :-1]
        else:
            bye = alive[:, :0]
        a, b = alive[:, 0::2], alive[:, 1::2]
        a_wins = P[rows.unsqueeze(-1), a, b] >= 0.5
        keep = a_wins if winner else ~a_wins
        alive = torch.cat([torch.where(keep, a, b), bye], dim=1)
    return alive[:, 0]


def gather(responses: Tensor, index: Tensor) -> Tensor:
    """responses[n, index[n]] for each prompt n, keeping a singleton k dimension: (N, 1, ...)."""
    shape = (responses.shape[0], 1, *responses.shape[2:])
    idx = index.view(-1, 1, *([1] * (responses.dim() - 2))).expand(shape)
    return responses.gather(1, idx)


def play_against(policy, prompt: Tensor, k: int, opponent: str, anchors: list[str], reduction: str,
                 mixture_coef: float = 0.0) -> dict[str, Tensor]:
    """k responses from the policy against k from ``opponent`` (a source: "policy", a snapshot, "mixture"),
    labeled pairwise, with the log-probs of the responses under each anchor computed once without grad."""
    responses, opponents = policy.sample_groups(prompt, [dict(k=k), dict(k=k, source=opponent, mixture_coef=mixture_coef)])
    batch = {"prompt": prompt, "responses": responses, "p": label(policy.preference, prompt, responses, opponents)}
    for anchor in anchors:
        batch[anchor] = policy.response_log_probs(prompt, responses, source=anchor, reduction=reduction)
    return batch
