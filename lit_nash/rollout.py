"""The rollout: what one online step trains on, sampled with the weights of that step, as a typed record.

``Rollout`` is the record (in the manner of torchtune's ``Trajectory``): built by an algorithm through the
``Rollouts`` service, read by its loss, never written by it. ``Rollouts`` is the service: it samples
through the run's generator, labels pairs with the preference model, and computes snapshot log-probs, all
without grad and each timed under Lightning's profiler (``generate``, ``preference``, ``logprobs``).

Labeling has one path for training and evaluation (``label``): an exact oracle reads token ids or
actions; a text preference model reads text, which the rollout decodes with the policy's tokenizer, once
per distinct sample, so a preference model never calls into the policy. Every probability is checked to
be finite and in [0, 1].

Shapes: N prompts, k samples of a group, m responses the loss scores per prompt (each once), c comparisons
it trains per prompt (indices into the m), T tokens (absent for a tabular policy, whose responses are
action indices).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Sequence

import torch
from torch import Tensor

from lit_nash.generation.base import SamplingGroup
from lit_nash.guards import NumericalError

PAIR_SELECTIONS = ("best_worst", "top2", "tournament")
COUNTERS = ("pref/queries", "gen/tokens")
"""What a run's training costs, counted cumulatively: pairs labeled by the preference model (each pair twice
for a model that reads both orders, ``reads_both_orders``; in exact play, K(K − 1)/2 per prompt for each
evaluation of the exact win rates, ``Rollouts.win_rates``) and tokens generated (a response's tokens up to and
including its first EOS; an action counts one; none in exact play)."""


@dataclass
class Rollout:
    """One step's training data. Each response the loss scores is held once per prompt, and the comparisons
    it trains are indices into them (``pairs``), so the loss's forward with grad and every snapshot's
    log-probs run over the m responses of a prompt, however many pairs are trained (all k(k − 1)/2 pairs of
    k samples cost k sequences, not k(k − 1)). Every tensor's first dimension is the prompt row (N), so a
    rollout splits into micro-batches by rows (``select``).

    Shapes: m responses scored per prompt, c comparisons trained per prompt (``pairs``), T tokens."""

    prompt: Tensor
    """(N,) prompt indices, each once."""
    responses: Tensor
    """(N, m, T) token ids ending with EOS then pad, or (N, m) actions: what the loss scores under π_θ, each
    response once."""
    reduction: str = "sum"
    """How the loss's log-probs reduce over tokens: "sum", or "mean" per token."""
    pairs: Tensor | None = None
    """(N, c, 2) indices into ``responses``' m dimension: (first, second) of each trained comparison (a
    pairwise loss reads ``difference``); None for a loss on each response (policy gradients, SPPO)."""
    p: Tensor | None = None
    """Preference probabilities: (N, c) P(first ≻ second) of each pair, or (N, m) P(y ≻ its opponent) of each
    response."""
    target: Tensor | None = None
    """(N, c) or (N, m): the regression target of the loss, per pair or per response, computed at sampling time."""
    weight: Tensor | None = None
    """(N, c) or (N, m): per-comparison weight of a weighted loss (a 0 drops the comparison), scaled at
    construction to mean 1 over the step's rollout: a weighted mean Σ w·err / Σ w is then a plain mean, which
    the engine's micro-batches (slices of prompts, each weighted by its share of them) add up exactly."""
    lengths: Tensor | None = None
    """(N, m) tokens each response's log-prob sums over (up to and including its first EOS, at least 1): a
    per-token mean times its length is the sequence log-prob (``sequence``). None for actions."""
    anchors: dict[str, Tensor] = field(default_factory=dict)
    """snapshot name → (N, m) log-probs of ``responses`` under that snapshot, no grad."""
    policy_logp: Tensor | None = None
    """(N, m) log-probs of ``responses`` under π_t, the weights the step starts from. The engine fills it
    from its first forward on this rollout (detached), so the later epochs of a round regress against π_t
    without a second pass; losses only read it."""
    samples: dict[str, Tensor] = field(default_factory=dict)
    """What was sampled, by role ("policy", "opponent", "proposal", ...): (N, k, T) or (N, k)."""
    generator_logp: Tensor | None = None
    """(N, m) log-probs the generator reported for ``responses`` (diagnostics only; losses recompute)."""

    def difference(self, values: Tensor) -> Tensor:
        """(N, c): ``values`` (N, m) of each pair's first response minus its second's."""
        first, second = self.pairs.to(values.device).unbind(-1)
        return values.gather(1, first) - values.gather(1, second)

    def sequence(self, logp: Tensor) -> Tensor:
        """Sequence log-probs (summed over tokens) of log-probs (N, m) reduced as the rollout reduces them: a
        score-function estimator needs them whatever the reduction (a per-token mean is not a log-density)."""
        if self.reduction == "mean" and self.lengths is not None:
            return logp * self.lengths.to(logp)
        return logp

    def __post_init__(self):
        if self.weight is not None:
            self.weight = self.weight * (self.weight.numel() / self.weight.sum().clamp_min(1e-12))

    def select(self, rows: Tensor) -> "Rollout":
        """The rollout of prompt rows ``rows`` (a micro-batch), its weights as the whole step scaled them."""
        def pick(value):
            if isinstance(value, Tensor):
                return value[rows.to(value.device)]
            if isinstance(value, dict):
                return {k: pick(v) for k, v in value.items()}
            return value

        return Rollout._as_is({f.name: pick(getattr(self, f.name)) for f in fields(self)})

    def __len__(self) -> int:
        return len(self.prompt)

    def to_state(self) -> dict[str, Any]:
        """Tensors and plain values only (checkpoints load with ``weights_only=True``)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "Rollout":
        return cls._as_is({f.name: state[f.name] for f in fields(cls) if f.name in state})

    @classmethod
    def _as_is(cls, values: dict[str, Any]) -> "Rollout":
        """A rollout of fields already scaled (a slice, a saved round): not rescaled, so a resume is exact."""
        rollout = cls.__new__(cls)
        for f in fields(cls):
            setattr(rollout, f.name, values[f.name] if f.name in values else
                    f.default_factory() if f.default_factory is not MISSING else f.default)
        return rollout


def all_pairs(N: int, k: int, device=None) -> Tensor:
    """(N, k(k − 1)/2, 2): every pair i < j of k responses, for each of N prompts."""
    i, j = torch.triu_indices(k, k, offset=1, device=device)
    return torch.stack([i, j], dim=-1).expand(N, -1, -1).contiguous()


@dataclass
class ExactTarget:
    """Exact play's step: the algorithm's closed-form next iterate (prompts, A), from exact expectations."""

    target: Tensor


# -- labeling: one path for training and evaluation ----------------------------------------------------------
def reads_text(preference) -> bool:
    """Text preference models answer ``prob_text``; exact oracles answer ``prob`` on ids or actions."""
    return hasattr(preference, "prob_text")


def decode_once(reader, responses: Tensor) -> list[str]:
    """The text of every response (flattened over all but the last dimension), each distinct one decoded once."""
    flat = responses.reshape(-1, responses.shape[-1])
    unique, inverse = torch.unique(flat.cpu(), dim=0, return_inverse=True)
    texts = reader.decode(unique)
    return [texts[i] for i in inverse.tolist()]


def label(preference, prompt: Tensor, a: Tensor, b: Tensor, reader=None, reader_b=None) -> Tensor:
    """P(a ≻ b | prompt) (N, m) for responses a, b (N, m, ...), validated. A text preference model reads the
    prompts and responses as text: ``reader`` (a's policy) and ``reader_b`` (b's, default the same) decode."""
    if reads_text(preference):
        if reader is None:
            raise ValueError("a text preference model needs the responses as text: give the policy that wrote them")
        N, m = a.shape[:2]
        prompts = [reader.prompt_text(i) for i in prompt.tolist() for _ in range(m)]
        p = preference.prob_text(prompts, decode_once(reader, a), decode_once(reader_b or reader, b))
        p = p.view(N, m).to(a.device)
    else:
        p = preference.prob(prompt, a, b)
    return check_probabilities(p, prompt, a, b)


def check_probabilities(p: Tensor, prompt: Tensor, a: Tensor | None = None, b: Tensor | None = None) -> Tensor:
    """``p`` (N, m) itself, if every entry is finite and in [0, 1]; else an error naming the first bad pair."""
    bad = ~torch.isfinite(p) | (p < 0) | (p > 1)
    if bad.any():
        n, m = (int(i) for i in bad.nonzero()[0])
        pair = f" (responses {a[n, m].tolist()} vs {b[n, m].tolist()})" if a is not None and b is not None else ""
        raise NumericalError(f"preference model returned {p[n, m].item()} for prompt {int(prompt[n])}, pair {m}{pair}: "
                             "probabilities must be finite and in [0, 1]")
    return p


# -- the service --------------------------------------------------------------------------------------------
class Rollouts:
    """Sampling, labeling and snapshot log-probs for one policy network, without grad."""

    def __init__(self, network, generator, preference, profiler=None):
        from lightning.pytorch.profilers import PassThroughProfiler

        self.network, self.generator, self.preference = network, generator, preference
        self.profiler = profiler or PassThroughProfiler()
        self.stale = False  # the weights changed since the generator last sampled
        self.generated: list[tuple[Tensor, Tensor, Tensor]] | None = None  # see ``recording``
        self.counts = dict.fromkeys(COUNTERS, 0)  # the run's totals, all processes (``count``), in checkpoints
        self.new: dict[str, int] | None = None  # see ``counting``

    @property
    def reader(self):
        """What turns the policy's responses into text: the network itself (LMs), or None (tabular)."""
        return self.network if hasattr(self.network, "decode") else None

    @torch.no_grad()
    def sample(self, prompt: Tensor, groups: Sequence[SamplingGroup], return_log_probs: bool = False):
        """One response tensor per group (with ``return_log_probs``: (responses, log-probs) pairs)."""
        if self.stale:
            self.generator.sync()
            self.stale = False
        record = self.generated is not None and getattr(self.generator, "reports_log_probs", False)
        with self.profiler.profile("generate"):
            out = self.generator.generate(prompt, list(groups), return_log_probs=return_log_probs or record)
        if record:
            self.generated += [(prompt, s.responses, s.log_probs) for g, s in zip(groups, out) if g.source == "policy"]
        if self.new is not None:
            self.new["gen/tokens"] += sum(self.tokens(s.responses) for s in out)
        return [(s.responses, s.log_probs) for s in out] if return_log_probs else [s.responses for s in out]

    @contextmanager
    def recording(self):
        """Inside the block, the policy's samples and the log-probs its generator reported for them are kept
        (a generator with ``reports_log_probs``, whose log-probs come free: vLLM), for ``generator_log_probs``."""
        self.generated = []
        try:
            yield self.generated
        finally:
            self.generated = None

    def generator_log_probs(self, rollout: Rollout, generated: list[tuple[Tensor, Tensor, Tensor]]) -> Tensor | None:
        """(N, m): the generator's log-probs of the rollout's responses, reduced as the loss reduces them, where
        it sampled them from the policy in ``generated`` (the same prompt and every token up to the first EOS);
        NaN elsewhere (a snapshot's or a mixture's samples). None when nothing was recorded."""
        if not generated or rollout.responses.dim() != 3:
            return None
        table: dict[tuple[int, tuple[int, ...]], float] = {}
        for prompt, responses, logp in generated:
            for x, key, lp in zip(prompt.repeat_interleave(responses.shape[1]).tolist(), self._keys(responses),
                                  logp.reshape(-1).tolist()):
                table[(x, key)] = lp
        N, m, _ = rollout.responses.shape
        out = []
        for x, key in zip(rollout.prompt.repeat_interleave(m).tolist(), self._keys(rollout.responses)):
            lp = table.get((x, key), float("nan"))
            out.append(lp / max(1, len(key)) if rollout.reduction == "mean" else lp)
        return torch.tensor(out, dtype=torch.float32).view(N, m).to(rollout.responses.device)

    def _keys(self, responses: Tensor) -> list[tuple[int, ...]]:
        """Each response's scored tokens (up to and including the first EOS), flattened over (N, k)."""
        flat = responses.reshape(-1, responses.shape[-1]).cpu()
        mask = self.network.response_mask(flat)
        return [tuple(row[keep].tolist()) for row, keep in zip(flat, mask)]

    @contextmanager
    def counting(self):
        """Inside the block, the preference queries and generated tokens are counted, and yielded (a training
        rollout is made inside one; evaluation's matches are not counted). ``count`` adds them to the totals."""
        self.new = dict.fromkeys(COUNTERS, 0)
        try:
            yield self.new
        finally:
            self.new = None

    def count(self, new: dict[str, int], reduce=None) -> dict[str, int]:
        """Add one step's counts to the run's totals; ``reduce`` sums a tensor over processes (the trainer's
        strategy), so every process holds the run's totals. Returns the totals."""
        values = torch.tensor([float(new.get(k, 0)) for k in COUNTERS], dtype=torch.float64)
        if reduce is not None:
            values = reduce(values)
        for key, value in zip(COUNTERS, values.tolist()):
            self.counts[key] += int(value)
        return self.counts

    def tokens(self, responses: Tensor) -> int:
        """Tokens generated in ``responses`` (..., T): each up to and including its first EOS; an action is one."""
        if responses.dim() < 3:
            return responses.numel()
        return int(self.network.response_mask(responses.reshape(-1, responses.shape[-1])).sum())

    def win_rates(self, log_pi: Tensor) -> Tensor:
        """Exact play's oracle: P(y ≻ π) for every response y of every prompt, (prompts, K), from the exact
        preference model. P·π reads each pair's probability once (P(y' ≻ y) = 1 − P(y ≻ y'), the diagonal is ½):
        K(K − 1)/2 preference queries per prompt per call, counted like sampled play's labels."""
        if self.new is not None:
            K = log_pi.shape[-1]
            self.new["pref/queries"] += log_pi.shape[:-1].numel() * K * (K - 1) // 2
        with self.profiler.profile("preference"):
            return self.preference.win_rates(log_pi)

    @torch.no_grad()
    def label(self, prompt: Tensor, a: Tensor, b: Tensor) -> Tensor:
        if self.new is not None:
            self.new["pref/queries"] += a.shape[:2].numel() * (2 if getattr(self.preference, "reads_both_orders", False) else 1)
        with self.profiler.profile("preference"):
            return label(self.preference, prompt, a, b, self.reader)

    @torch.no_grad()
    def label_all_pairs(self, prompt: Tensor, responses: Tensor) -> Tensor:
        """P̂[n, i, j] = P(y_i ≻ y_j) among the k samples of each prompt, (N, k, k); only i < j is asked for,
        the rest is 1 − P̂ᵀ and ½ on the diagonal (preferences are constant-sum)."""
        N, k = responses.shape[:2]
        i, j = torch.triu_indices(k, k, offset=1, device=responses.device)
        p = self.label(prompt, responses[:, i], responses[:, j])
        P = torch.full((N, k, k), 0.5, dtype=p.dtype, device=p.device)
        P[:, i, j] = p
        P[:, j, i] = 1 - p
        return P

    @torch.no_grad()
    def log_probs(self, prompt: Tensor, responses: Tensor, source: str, reduction: str = "sum") -> Tensor:
        with self.profiler.profile("logprobs"):
            return self.network.response_log_probs(prompt, responses, source=source, reduction=reduction)

    def anchors(self, prompt: Tensor, responses: Tensor, names: Sequence[str], reduction: str) -> dict[str, Tensor]:
        """Each snapshot's log-probs of ``responses``, computed once."""
        return {name: self.log_probs(prompt, responses, name, reduction) for name in names}

    def play_against(self, prompt: Tensor, k: int, opponent: str, anchors: Sequence[str], reduction: str,
                     mixture_coef: float = 0.0) -> Rollout:
        """k responses from the policy against k from ``opponent`` (a source: "policy", a snapshot, "mixture"),
        labeled pairwise, with each anchor's log-probs of the policy's responses."""
        responses, opponents = self.sample(prompt, [SamplingGroup(k=k), SamplingGroup(k=k, source=opponent,
                                                                                     mixture_coef=mixture_coef)])
        return Rollout(prompt=prompt, responses=responses, reduction=reduction,
                       p=self.label(prompt, responses, opponents), lengths=self.lengths(responses),
                       anchors=self.anchors(prompt, responses, anchors, reduction),
                       samples={"policy": responses, "opponent": opponents})


    def lengths(self, responses: Tensor) -> Tensor | None:
        """(N, m) tokens each response's log-prob sums over (at least 1), as ``response_log_probs`` counts them
        for its per-token mean; None for actions."""
        if responses.dim() != 3:
            return None
        mask = self.network.response_mask(responses.reshape(-1, responses.shape[-1]))
        return mask.sum(-1).clamp(min=1).view(responses.shape[:2]).to(torch.float32)


# -- pair selection among k labeled samples ------------------------------------------------------------------
WIN_RATES = ("mean", "leave_one_out")


def win_rate_scores(P: Tensor, how: str = "leave_one_out") -> Tensor:
    """P̂(y_i ≻ π) from the labeled k×k matrix, (N, k): ``leave_one_out``, the mean win probability against
    the other k − 1 samples; ``mean``, the row mean over all k with the ½ diagonal (SPPO's
    ``compute_prob.py``), = ((k − 1)·leave_one_out + ½)/k, shrunk toward ½ by (k − 1)/k. Both rank alike."""
    k = P.shape[-1]
    if how == "mean":
        return P.sum(-1) / k
    if how == "leave_one_out":
        return (P.sum(-1) - 0.5) / (k - 1)
    raise ValueError(f"win-rate estimate must be one of {list(WIN_RATES)}, got {how!r}")


def same_response(responses: Tensor) -> Tensor:
    """(N, k, k): whether samples i and j of a prompt are the same response (every token id, or the action)."""
    flat = responses.reshape(*responses.shape[:2], -1)
    return (flat[:, :, None, :] == flat[:, None, :, :]).all(-1)


def distinct_scores(P: Tensor, responses: Tensor) -> tuple[Tensor, Tensor]:
    """Leave-one-out win rates of the distinct responses, as COMAL's ``data_processing.py`` builds them:
    identical samples are one candidate whose score pools all their comparisons (the mean of its copies'
    scores, the comparisons between copies included). Returns the scores (N, k), with each later copy
    masked to NaN, and the mask of first occurrences (N, k)."""
    same = same_response(responses)
    scores = win_rate_scores(P)
    pooled = (same.to(P.dtype) @ scores.unsqueeze(-1)).squeeze(-1) / same.sum(-1)
    first = ~torch.tril(same, diagonal=-1).any(-1)  # no earlier copy
    return pooled.masked_fill(~first, float("nan")), first


def select_pairs(P: Tensor, how: str, responses: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Indices (winner, loser), each (N,), of one pair per prompt from the labeled k×k matrix. With
    ``responses``, ``best_worst`` and ``top2`` rank the distinct responses only (``distinct_scores``); a
    prompt with fewer than 2 of them gets a pair of one response with itself (the caller drops it)."""
    if how in ("best_worst", "top2") and responses is not None:
        scores, first = distinct_scores(P, responses)
        top = torch.where(first, scores, -torch.inf).topk(2, dim=-1).indices
        worst = torch.where(first, scores, torch.inf).argmin(-1)
        return top[:, 0], (top[:, 1] if how == "top2" else worst)
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
