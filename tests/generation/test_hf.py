"""The ``hf`` generator: bit-identical to the fused decoding loop it replaced (``hf_reference.pt``, written by
``make_hf_reference.py`` with the old ``CausalLMPolicy.sample_groups``), fused groups that draw what each group
draws alone, and the ``Generator`` interface that it and the tabular sampler implement."""

from pathlib import Path

import pytest
import torch

from lit_nash.games.token import token_game
from lit_nash.generation import Generator, HFGenerator, SamplingGroup, TabularSampler
from lit_nash.models import tiny_causal_lm
from lit_nash.policy import TabularPolicy
from lit_nash.policy.causal_lm import CausalLMPolicy

from ..policy.test_causal_lm import train  # make_hf_reference.py's training: AdamW on the valid responses

REFERENCE = Path(__file__).with_name("hf_reference.pt")
GAME = token_game()
PROMPTS = torch.arange(GAME.num_prompts)
TEXT_PROMPTS = ["say 0", "say 0 1 a b", "a", "say"]  # left padding of different lengths
LORA = {
    "gpt2": {"r": 4, "lora_alpha": 8, "target_modules": ["c_attn", "c_proj"], "fan_in_fan_out": True},
    "llama": {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]},
}
# make_hf_reference.py's groups; its seeds=[11 + g, 12 + g] are the groups' seeds (a lone group takes the first)
GROUPS = [
    [dict(k=2, temperature=2.0, top_k=3), dict(k=1)],
    [dict(k=2), dict(k=2, source="mixture", mixture_coef=0.4)],
    [dict(k=2), dict(k=3, source="snap", top_p=0.9)],
    [dict(k=3, source="ref", temperature=0.7, top_k=5, top_p=0.8)],
]
CASES = [(arch, lora, text) for arch in ("gpt2", "llama") for lora in (False, True) for text in (False, True)]


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    """The reference's models: tiny random-init LMs for the token game's words, seed 0."""
    root = tmp_path_factory.mktemp("models")
    return {arch: str(tiny_causal_lm(root / arch, GAME.vocabulary(), arch=arch, seed=0)) for arch in ("gpt2", "llama")}


@pytest.fixture(scope="module")
def reference():
    return torch.load(REFERENCE, weights_only=True)


def test_the_reference_holds_every_case(reference):
    expected = {f"{a}-lora{int(lo)}-text{int(t)}-{g}" for a, lo, t in CASES
                for g in [f"g{i}" for i in range(len(GROUPS))] + ["global"]}
    assert set(reference) == expected


@pytest.mark.parametrize("arch,lora,text", CASES, ids=[f"{a}-lora{int(lo)}-text{int(t)}" for a, lo, t in CASES])
def test_generation_is_bit_identical_to_the_old_fused_loop(paths, reference, arch, lora, text):
    """Tokens torch.equal to the old loop's, for the policy, the reference (LoRA: adapters disabled), a
    snapshot (now a copy of the adapter or of all parameters, run with functional_call) and the mixture, with
    filtering warpers, on a trained policy (game prompts) and on left-padded text prompts; log-probs equal to
    rounding. They were equal to the last bit until the output head was given a contiguous input (see
    ``_contiguous_head_input``): with LoRA its frozen weight's product at the prompt's step is now one matrix
    product instead of a batched one, which rounds differently: max difference 9.5e-7 where the reference was
    made. The reference comes from another CPU, and three AdamW steps amplify a CPU's own rounding of the
    training: on an AMD EPYC (avx512_bf16, 2026-12-04) the tokens were still equal and the log-probs differed by
    up to 2.3e-4. Allowed: 1e-3, still far below any change of the sampled tokens' probabilities."""
    torch.manual_seed(0)  # LoRA's initialization draws from the global stream
    kw = dict(prompts=TEXT_PROMPTS) if text else dict(game=GAME)
    policy = CausalLMPolicy(paths[arch], lora=LORA[arch] if lora else None, max_new_tokens=6, **kw)
    policy.chunked_head = False  # trained as when the reference was made (AdamW amplifies the chunks' rounding)
    if not text:
        train(policy, 1)
    policy.refresh_snapshot("snap")
    if not text:
        train(policy, 2)
    generator = HFGenerator(policy)
    name = f"{arch}-lora{int(lora)}-text{int(text)}"
    for g, groups in enumerate(GROUPS):
        seeded = [SamplingGroup(**group, seed=seed) for group, seed in zip(groups, [11 + g, 12 + g])]
        out = generator.generate(PROMPTS, seeded, return_log_probs=True)
        saved = reference[f"{name}-g{g}"]
        assert len(out) == len(saved["tokens"]) == len(saved["logp"]) == len(groups)
        for i, (samples, tokens, logp) in enumerate(zip(out, saved["tokens"], saved["logp"])):
            assert torch.equal(samples.responses, tokens), (g, i)
            torch.testing.assert_close(samples.log_probs, logp, atol=1e-3, rtol=0, msg=lambda m: f"{(g, i)}: {m}")
    # unseeded: the group's seed is drawn from torch's global stream, as the old sample() drew it
    torch.manual_seed(5)
    (samples,) = generator.generate(PROMPTS, [SamplingGroup(k=3)])
    assert samples.log_probs is None
    assert torch.equal(samples.responses, reference[f"{name}-global"]["tokens"][0])


@pytest.mark.parametrize("lora", [False, True])
@pytest.mark.parametrize("groups", [
    # online IPO / EGPO: proposal pair and y'' share a forward
    [SamplingGroup(k=2, temperature=2.0, top_k=3, seed=3), SamplingGroup(k=1, seed=4)],
    # Nash-MD: the mixture's policy half is shared
    [SamplingGroup(k=2, seed=3), SamplingGroup(k=2, source="mixture", mixture_coef=0.4, seed=4)],
    # a snapshot opponent: its own model and cache
    [SamplingGroup(k=2, seed=3), SamplingGroup(k=3, source="snap", top_p=0.9, seed=4)],
])
def test_fused_groups_draw_the_same_samples_as_separate_loops(paths, lora, groups):
    """One decoding loop over several groups = each group alone with its generator: identical tokens (the
    fused loop may run longer, so a group's extra columns are pad) and log-probs equal up to the float
    round-off of a different batch size (1e-4 on sums of ≤ 6 token log-probs)."""
    policy = CausalLMPolicy(paths["gpt2"], game=GAME, lora=LORA["gpt2"] if lora else None, max_new_tokens=6)
    train(policy, steps=1)
    policy.refresh_snapshot("snap")
    train(policy, steps=2)
    generator = HFGenerator(policy)
    fused = generator.generate(PROMPTS, groups, return_log_probs=True)
    for group, samples in zip(groups, fused):
        responses, logp = samples.responses, samples.log_probs
        (alone,) = generator.generate(PROMPTS, [group], return_log_probs=True)
        alone, alone_logp = alone.responses, alone.log_probs
        T = alone.shape[-1]
        assert responses.shape[:2] == alone.shape[:2] == (len(PROMPTS), group.k)
        assert torch.equal(responses[..., :T], alone)
        assert (responses[..., T:] == policy.pad_id).all()
        torch.testing.assert_close(logp, alone_logp, rtol=0, atol=1e-4)
        exact = policy.response_log_probs(PROMPTS, alone, source=group.source, mixture_coef=group.mixture_coef)
        torch.testing.assert_close(logp, exact, rtol=0, atol=1e-4)  # generation's log-probs are the scored ones


def test_generators_implement_the_interface(paths):
    """Both generators are ``Generator``s; a group's own ``max_new_tokens`` limits that group only; a seeded
    tabular group draws the same actions whatever torch's global stream holds."""
    policy = CausalLMPolicy(paths["gpt2"], game=GAME, max_new_tokens=6)
    hf = HFGenerator(policy)
    network = TabularPolicy(3, 5, reference="gaussian")
    tabular = TabularSampler(network)
    assert isinstance(hf, Generator) and isinstance(tabular, Generator)

    short, full = hf.generate(PROMPTS, [SamplingGroup(k=4, max_new_tokens=2, seed=1), SamplingGroup(k=4, seed=2)])
    assert short.responses.shape[:2] == full.responses.shape[:2] == (len(PROMPTS), 4)
    assert (short.responses[..., 2:] == policy.pad_id).all()  # at most 2 tokens
    assert (full.responses[..., 2:] != policy.pad_id).any()  # the policy's own limit (6) lets the other run longer
    (alone,) = hf.generate(PROMPTS, [SamplingGroup(k=4, max_new_tokens=2, seed=1)])
    assert alone.responses.shape[-1] <= 2 and torch.equal(short.responses[..., :alone.responses.shape[-1]], alone.responses)

    prompt = torch.tensor([0, 2, 2, 1])
    group = SamplingGroup(k=16, seed=7)
    torch.manual_seed(0)
    a = tabular.generate(prompt, [group], return_log_probs=True)[0]
    torch.manual_seed(1)
    b = tabular.generate(prompt, [group], return_log_probs=True)[0]
    assert a.responses.shape == (4, 16) and torch.equal(a.responses, b.responses) and torch.equal(a.log_probs, b.log_probs)
    torch.testing.assert_close(a.log_probs, network.log_probs()[prompt].gather(-1, a.responses), rtol=0, atol=0)
    assert not torch.equal(a.responses, tabular.generate(prompt, [SamplingGroup(k=16, seed=8)])[0].responses)
