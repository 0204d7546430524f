"""Log-probs of chosen tokens through a causal LM's output head, a chunk of positions at a time.

Scoring responses needs log π(y_t | x, y_<t) at every response position. The plain way, the model's logits
``[B, T, V]`` in fp32 then ``log_softmax``, holds the full-vocabulary logits of every position at once, and
backward holds their gradient too: on SmolLM2 (V = 49152) 16 sequences of 100 tokens are 315 MB per copy,
the largest activations of a LoRA step. Here the head's matrix product and the log-softmax run over chunks of
the positions that are scored (a response's tokens up to its first EOS, never the padding), and backward
recomputes each chunk's logits instead of keeping them, as the fused cross-entropy kernels of training
libraries do. The result is the plain path's, to rounding (``tests/policy/test_chunked_head.py``).

The head is reached without changing the model: inside one forward its ``forward`` is replaced by a function
that computes the log-probs from the hidden states and the head's weight as the forward sees it (the
policy's, a snapshot's under ``functional_call``, the parameters FSDP2 gathered), and returns its input. That
is only valid when the model returns its head's output unchanged (no logit soft-capping or scaling after the
head): ``returns_head_output`` checks it once per model.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import Tensor, nn

CHUNK_BYTES = 2**26  # fp32 logits per chunk: 64 MiB (341 positions of SmolLM2's 49152-token vocabulary)


def chunk_rows(vocab: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    return max(1, int(chunk_bytes) // (4 * int(vocab)))


def _logits(hidden: Tensor, weight: Tensor, bias: Tensor | None, dtype: torch.dtype) -> Tensor:
    """One chunk's logits in fp32, the product computed in ``dtype`` (what the model's head would use)."""
    return nn.functional.linear(hidden.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype)).float()


class _HeadLogProbs(torch.autograd.Function):
    """log softmax(h W^T + b)[target] per row of ``hidden`` (M, d), chunk by chunk; backward recomputes each
    chunk's logits: d/dz = g (onehot(target) - softmax(z))."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, rows, dtype):
        out = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], rows):
            z = _logits(hidden[start:start + rows], weight, bias, dtype)
            t = targets[start:start + rows, None]
            out[start:start + rows] = (z.gather(-1, t) - z.logsumexp(-1, keepdim=True)).squeeze(-1)
        ctx.save_for_backward(hidden, weight, bias, targets)
        ctx.rows, ctx.dtype = rows, dtype
        return out

    @staticmethod
    def backward(ctx, grad):
        hidden, weight, bias, targets = ctx.saved_tensors
        rows, dtype = ctx.rows, ctx.dtype
        want_h, want_w, want_b = ctx.needs_input_grad[:3]
        dh = torch.empty_like(hidden) if want_h else None
        dw = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if want_w else None
        db = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if want_b else None
        for start in range(0, hidden.shape[0], rows):
            h = hidden[start:start + rows]
            g = grad[start:start + rows, None].float()
            dz = _logits(h, weight, bias, dtype).softmax(-1).mul_(-g)
            dz.scatter_add_(-1, targets[start:start + rows, None], g)
            dz = dz.to(dtype)
            if want_h:
                dh[start:start + rows] = (dz @ weight.to(dtype)).to(hidden.dtype)
            if want_w:
                dw += (dz.T @ h.to(dtype)).float()
            if want_b:
                db += dz.float().sum(0)
        return (dh, None if dw is None else dw.to(weight.dtype), None if db is None else db.to(bias.dtype),
                None, None, None)


def head_log_probs(hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, rows: int) -> Tensor:
    """(M,) fp32 log-probs of ``targets`` (M,) from the head's inputs ``hidden`` (M, d), ``rows`` positions a
    chunk. Under autocast the product runs in autocast's dtype, as the model's own head would."""
    device = hidden.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else torch.promote_types(hidden.dtype, weight.dtype)
    with torch.autocast(device, enabled=False):
        return _HeadLogProbs.apply(hidden, weight, bias, targets, rows, dtype)


@contextmanager
def scoring_head(head: nn.Linear, positions: Tensor, targets: Tensor, rows: int) -> Iterator[list[Tensor]]:
    """Inside the block, one forward of the model computes the log-probs (M,) of ``targets`` at the head-input
    positions ``positions`` (a boolean mask over the hidden states the head receives, (B, S)); the list yielded
    holds them after the forward. The model's returned "logits" are the hidden states: do not read them."""
    found: list[Tensor] = []

    def forward(hidden: Tensor) -> Tensor:
        found.append(head_log_probs(hidden[positions], head.weight, head.bias, targets, rows))
        return hidden

    head.forward = forward
    try:
        yield found
    finally:
        del head.forward  # the class's forward again


@torch.no_grad()
def returns_head_output(model: nn.Module) -> bool:
    """Whether ``model``'s logits are its output head's output as it is (the head an ``nn.Linear``), checked on a
    two-token input (to 1e-3 of their size): then ``scoring_head`` computes the model's own log-probs."""
    head = model.get_output_embeddings()
    if type(head) is not nn.Linear:  # a peft-adapted head, a tied custom module: the plain path
        return False
    ids = torch.tensor([[1, 2]], device=head.weight.device) % head.weight.shape[0]  # not a zero padding embedding
    inputs = dict(input_ids=ids)
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    seen: list[Tensor] = []
    hook = head.register_forward_hook(lambda module, args, output: seen.append(args[0]))
    try:
        logits = model(**inputs).logits
    finally:
        hook.remove()
    expected = nn.functional.linear(seen[0], head.weight, head.bias).float()
    if logits.shape != expected.shape:
        return False
    return bool((logits.float() - expected).abs().max() <= 1e-3 * expected.abs().max().clamp(min=1e-30))
