"""Log-probs through the output head a chunk of positions at a time (``lit_nash.policy.chunked_head``): the
same log-probs and gradients as the plain path (the model's full logits, then log-softmax), to rounding, for
GPT-2 and Llama, full fine-tuning and LoRA, a snapshot source, both reductions, fp32 and bf16; and a lower
peak memory for a large vocabulary. A model whose logits are not its head's output keeps the plain path."""

from pathlib import Path

import pytest
import torch

from lit_nash.models import tiny_causal_lm
from lit_nash.policy.causal_lm import CausalLMPolicy
from lit_nash.policy.chunked_head import returns_head_output
from tests.test_scoring_cost import peak_bytes

WORDS = [f"w{i}" for i in range(1500)]
PROMPTS = [" ".join(WORDS[7 * i: 7 * i + 3 + i % 4]) for i in range(5)]
LORA = {"r": 4, "lora_alpha": 8, "target_modules": "all-linear"}


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {arch: str(tiny_causal_lm(root / arch, WORDS, arch=arch, n_embd=32)) for arch in ("gpt2", "llama")}


def responses(policy, T=9, k=3):
    g = torch.Generator().manual_seed(0)
    out = torch.randint(4, len(WORDS), (len(PROMPTS), k, T), generator=g)
    out[0, 0, 3] = out[2, 1, 0] = policy.eos_id  # early EOS: what follows is padding, never scored
    out[0, 0, 4:] = out[2, 1, 1:] = policy.pad_id
    return out


def scored(policy, chunked, resp, **kw):
    """Log-probs and the gradients of a weighted sum of them, chunked (5 positions a chunk) or plain."""
    policy.chunked_head = chunked
    policy.logit_chunk_bytes = 4 * len(policy.tokenizer) * 5
    policy.model.zero_grad()
    lp = policy.response_log_probs(torch.arange(len(PROMPTS)), resp, **kw)
    if lp.requires_grad:
        (lp * torch.linspace(-1, 2, lp.numel()).view_as(lp)).sum().backward()
    grads = {n: p.grad.clone() for n, p in policy.model.named_parameters() if p.grad is not None}
    return lp.detach(), grads


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_chunked_log_probs_and_gradients_equal_the_plain_paths(paths, arch, lora):
    torch.manual_seed(0)
    policy = CausalLMPolicy(paths[arch], prompts=PROMPTS, max_new_tokens=9, lora=LORA if lora else None)
    assert policy.chunked_head
    resp = responses(policy)
    for reduction in ("sum", "mean"):
        (a, ga), (b, gb) = scored(policy, True, resp, reduction=reduction), scored(policy, False, resp, reduction=reduction)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        assert ga.keys() == gb.keys() and len(ga) > 4
        for name in ga:
            torch.testing.assert_close(ga[name], gb[name], rtol=1e-4, atol=1e-5, msg=name)
    with torch.no_grad():  # a snapshot's (the reference's) forward: functional_call, or LoRA's disabled adapter
        (a, _), (b, _) = scored(policy, True, resp, source="ref"), scored(policy, False, resp, source="ref")
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_bf16_weights_and_bf16_autocast_agree_to_bf16_rounding(paths):
    """The product runs in bf16 as the model's own head would (bf16 weights, or fp32 weights under autocast);
    log-softmax and the sums in fp32. Differences are rounding of bf16 products (~1e-2 on a sum of 9 tokens)."""
    resp = None
    for dtype, autocast in (("bfloat16", False), ("float32", True)):
        policy = CausalLMPolicy(paths["llama"], prompts=PROMPTS, max_new_tokens=9, dtype=dtype)
        resp = responses(policy) if resp is None else resp
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            (a, ga), (b, gb) = scored(policy, True, resp), scored(policy, False, resp)
        assert a.dtype == b.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=0, atol=0.05)
        for name in ga:
            scale = gb[name].float().abs().max().item()
            assert (ga[name].float() - gb[name].float()).abs().max().item() <= 0.02 * scale + 1e-3, name


def test_a_model_that_changes_its_heads_output_keeps_the_plain_path(paths):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(paths["llama"])
    assert returns_head_output(model)
    model.forward = _scaled(model.forward)  # e.g. a soft-capped or scaled head
    assert not returns_head_output(model)


def _scaled(forward):
    def scaled(*args, **kwargs):
        out = forward(*args, **kwargs)
        out.logits = out.logits * 0.5
        return out
    return scaled


def test_chunks_lower_the_peak_memory_of_a_forward_and_backward(tmp_path):
    """A 16000-token vocabulary, 8 sequences of 64 response tokens: the plain path holds fp32 logits, their
    log-softmax and their gradients, 33 MB each; in chunks of 64 positions the peak is a fraction of it."""
    words = [f"w{i}" for i in range(16000)]
    path = tiny_causal_lm(tmp_path / "lm", words, arch="llama", n_embd=32, max_positions=96)
    policy = CausalLMPolicy(str(path), prompts=PROMPTS[:4], max_new_tokens=64)
    resp = torch.randint(4, len(words), (4, 2, 64), generator=torch.Generator().manual_seed(0))
    x = torch.arange(4)

    def step(chunked):
        policy.chunked_head, policy.logit_chunk_bytes = chunked, 4 * len(words) * 64
        policy.model.zero_grad(set_to_none=False)
        policy.response_log_probs(x, resp).sum().backward()

    step(True), step(False)  # warm-up: gradients allocated, kernels loaded
    # the tensors' peak by torch's memory profiler: the process's RSS does not grow where freed heap is reused,
    # as it is after other tests in the same process
    plain, chunked = (peak_bytes(lambda: step(flag)) / 2**20 for flag in (False, True))
    logits_mb = 8 * 64 * len(words) * 4 / 2**20
    assert plain > 2 * logits_mb, (plain, chunked)  # the test sees the plain path's logits
    assert chunked < plain / 3, (plain, chunked)
