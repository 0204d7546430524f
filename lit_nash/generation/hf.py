"""The ``hf`` generator: batched KV-cache decoding with Hugging Face models, every group of a step fused
into one decoding loop.

Each model a step needs (the policy, a snapshot, the reference) runs once per token over the rows of every
group that uses it, with one KV cache: a proposal pair and y'' from the policy share one forward, and the
policy samples of Nash-MD share theirs with the mixture's policy half. A group's next-token logits are the
weighted sum of its components' (one component, or the geometric mixture (1−α)·ℓ_policy + α·ℓ_ref, the
only generator that can sample it token by token). Each group draws from its own ``torch.Generator``, so
its samples do not depend on which groups it was fused with (tests/generation/test_hf.py).
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Sequence

import torch
from torch import Tensor

from lit_nash.generation.base import Samples, SamplingGroup
from lit_nash.guards import NumericalError


def draw(probs: Tensor, generator: torch.Generator, components: list[tuple[str, float]]) -> Tensor:
    """One token per row; NaN or infinite logits (torch refuses to sample them) are a numerical error."""
    try:
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    except RuntimeError as e:
        if torch.isfinite(probs).all():
            raise
        raise NumericalError(f"non-finite logits of {' + '.join(repr(n) for n, _ in components)} while sampling") from e


def _all_done(done: Tensor) -> bool:
    """Every sequence has ended, on every rank: each forward of a sharded model is a collective, so all
    ranks must take the same number of decoding steps; DDP does the same, so a rank's samples (and its
    random stream) do not depend on how the model is distributed."""
    import torch.distributed as dist

    finished = done.all()
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        flag = finished.to(torch.int32).reshape(1)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        finished = flag[0].bool()
    return bool(finished)


class HFGenerator:
    def __init__(self, network):
        """``network`` is a ``CausalLMPolicy``: its model, snapshots, prompt codec and sampling settings."""
        self.network = network

    def sync(self) -> None:
        """Decoding runs the network's own modules: they always hold the current weights."""

    def warpers(self, group: SamplingGroup):
        from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

        temperature, top_k, top_p, _ = group.settings(self.network)
        warpers = LogitsProcessorList()
        if temperature != 1.0:
            warpers.append(TemperatureLogitsWarper(temperature))
        if top_k > 0:
            warpers.append(TopKLogitsWarper(top_k))
        if top_p < 1.0:
            warpers.append(TopPLogitsWarper(top_p))
        return warpers

    @torch.no_grad()
    def generate(self, prompt: Tensor, groups: Sequence[SamplingGroup], return_log_probs: bool = False) -> list[Samples]:
        """Responses (N, k, T) per group, ending with EOS then pad; T ≤ the longest group's max_new_tokens.
        Log-probs (N, k) are under each source's untempered, unfiltered distribution, as decoded (the
        network's ``decoding`` precision)."""
        with getattr(self.network, "decoding", nullcontext)():
            return self._generate(prompt, groups, return_log_probs)

    def _generate(self, prompt: Tensor, groups: Sequence[SamplingGroup], return_log_probs: bool) -> list[Samples]:
        from transformers import DynamicCache

        net = self.network
        N = prompt.shape[0]
        if any(g.seed is None for g in groups):  # one draw on the CPU stream, like every other draw
            drawn = torch.randint(0, 2**62, (len(groups),)).tolist()
        else:
            drawn = [None] * len(groups)
        device = net.device
        plans = []  # per group: its rows of the batch, mixture components, warpers, generator, token limit
        offset = 0
        for group, seed in zip(groups, drawn):
            components = net.components(group.source, group.mixture_coef)
            generator = torch.Generator(device=device).manual_seed(int(seed if group.seed is None else group.seed))
            limit = group.settings(net)[3]
            plans.append((slice(offset, offset + N * group.k), group.k, components, self.warpers(group), generator, limit))
            offset += N * group.k
        one_ids, one_mask = net.codec.prompt_batch(prompt, 1, device)
        ids = torch.cat([one_ids.repeat_interleave(plan[1], 0) for plan in plans])
        mask = torch.cat([one_mask.repeat_interleave(plan[1], 0) for plan in plans])
        B = ids.shape[0]
        limits = torch.cat([torch.full((plan[1] * N,), plan[5], device=device) for plan in plans])
        # the rows each model runs on: every group that has it as a mixture component
        models: dict[str, Tensor] = {}
        for rows, _, components, *_ in plans:
            for name, _ in components:
                r = torch.arange(rows.start, rows.stop, device=ids.device)
                models[name] = r if name not in models else torch.cat([models[name], r])
        caches = {name: DynamicCache(config=net.model.config) for name in models}
        # where each group's rows sit inside each model's rows
        where = {name: {i: torch.searchsorted(r, torch.arange(p[0].start, p[0].stop, device=r.device))
                        for i, p in enumerate(plans) if any(n == name for n, _ in p[2])} for name, r in models.items()}
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        step_ids, seq, tokens = ids, ids, []
        done = torch.zeros(B, dtype=torch.bool, device=ids.device)
        logp = torch.zeros(B, dtype=torch.float32, device=ids.device)
        for t in range(int(limits.max())):
            out = {
                name: net.forward_as(
                    name, input_ids=step_ids[r], attention_mask=mask[r], position_ids=pos[r],
                    past_key_values=caches[name], use_cache=True, logits_to_keep=1,
                ).logits[:, -1].float()
                for name, r in models.items()
            }
            nxt = torch.empty(B, dtype=torch.long, device=ids.device)
            lp = torch.empty(B, dtype=torch.float32, device=ids.device)
            for i, (rows, _, components, warp, generator, _) in enumerate(plans):
                logits = sum(w * out[name][where[name][i]] for name, w in components)
                probs = warp(seq[rows], logits).softmax(-1)
                nxt[rows] = draw(probs, generator, components)
                lp[rows] = logits.log_softmax(-1).gather(-1, nxt[rows, None]).squeeze(-1)
            nxt = torch.where(done, torch.full_like(nxt, net.pad_id), nxt)
            logp += torch.where(done, torch.zeros_like(lp), lp)
            tokens.append(nxt)
            done |= (nxt == net.eos_id) | (t + 1 >= limits)
            if _all_done(done):
                break
            step_ids = nxt[:, None]
            seq = torch.cat([seq, step_ids], -1)
            mask = torch.cat([mask, torch.ones_like(step_ids)], -1)
            pos = pos[:, -1:] + 1
        responses = torch.stack(tokens, -1)
        # a group's responses end at its own limit (a row cut off there has no EOS, like any at max_new_tokens)
        return [Samples(responses[rows].view(N, k, -1)[..., :limit], logp[rows].view(N, k) if return_log_probs else None)
                for rows, k, _, _, _, limit in plans]
