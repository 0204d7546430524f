"""The causal-LM policy network on tiny random GPT-2 / Llama models built offline: sampling (through the hf
generator), scoring, the exact token-game distribution, and snapshots (copies of the LoRA adapter or of all
parameters) that survive training and checkpoints. The fused sampling groups are tested in
tests/generation/test_hf.py."""

import pytest
import torch

from lit_nash.games.token import token_game
from lit_nash.generation import HFGenerator, SamplingGroup
from lit_nash.models import tiny_causal_lm
from lit_nash.policy.causal_lm import CausalLMPolicy

GAME = token_game()
LORA = {
    "gpt2": {"r": 4, "lora_alpha": 8, "target_modules": ["c_attn", "c_proj"], "fan_in_fan_out": True},
    "llama": {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]},
}
PROMPTS = torch.arange(GAME.num_prompts)


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {arch: str(tiny_causal_lm(root / arch, GAME.vocabulary(), arch=arch)) for arch in ("gpt2", "llama")}


def make(paths, arch="gpt2", lora=False, **kw):
    kw.setdefault("max_new_tokens", 4)
    return CausalLMPolicy(paths[arch], game=GAME, lora=LORA[arch] if lora else None, **kw)


def sample(policy, prompt, k, return_log_probs=False, **group):
    """One sampling group through the hf generator (what the old ``policy.sample`` did)."""
    out = HFGenerator(policy).generate(prompt, [SamplingGroup(k=k, **group)], return_log_probs=return_log_probs)[0]
    return (out.responses, out.log_probs) if return_log_probs else out.responses


def train(policy, steps=3, lr=0.05):
    """A few AdamW steps that raise the log-probs of all valid responses (moves the policy deterministically)."""
    opt = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=lr)
    R, L = policy.response_ids.shape
    for _ in range(steps):
        loss = -policy.response_log_probs(PROMPTS, policy.response_ids.expand(len(PROMPTS), R, L)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def base_numel(policy):
    return sum(p.numel() for n, p in policy.named_parameters() if "lora_" not in n)


def test_missing_model_path_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no_model_here"):
        CausalLMPolicy(str(tmp_path / "no_model_here"), prompts=["say 0"])


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_sample_shape_eos_pad_structure_and_greedy(paths, arch):
    policy = make(paths, arch, max_new_tokens=5)
    torch.manual_seed(0)
    r = sample(policy, PROMPTS, 3)
    assert r.shape[:2] == (4, 3) and r.shape[2] <= 5 and r.dtype == torch.long
    eos = r == policy.eos_id
    for seq, e in zip(r.view(-1, r.shape[-1]), eos.view(-1, r.shape[-1])):
        if e.any():
            first = int(e.nonzero()[0])
            assert (seq[first + 1:] == policy.pad_id).all()
        else:
            assert r.shape[-1] == 5  # no EOS only when max_new_tokens ran out
    greedy = [sample(policy, PROMPTS, 3, top_k=1, temperature=0.7) for _ in range(2)]
    assert torch.equal(greedy[0], greedy[1]) and (greedy[0] == greedy[0][:, :1]).all()
    assert sample(policy, PROMPTS, 2, source="ref", top_k=1).shape[:2] == (4, 2)


def test_sampling_is_reproducible_with_a_seed(paths):
    policy = make(paths)
    torch.manual_seed(7)
    a = sample(policy, PROMPTS, 4)
    torch.manual_seed(7)
    b = sample(policy, PROMPTS, 4)
    assert torch.equal(a, b) and not torch.equal(a, sample(policy, PROMPTS, 4))



@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_response_log_probs_match_sampling_with_left_padding(paths, arch):
    prompts = ["say 0", "say 0 1 a b", "a", "say"]  # different lengths: left padding must not matter
    policy = CausalLMPolicy(paths[arch], prompts=prompts, max_new_tokens=6)
    torch.manual_seed(1)
    r, lp = sample(policy, PROMPTS, 3, return_log_probs=True)
    total = policy.response_log_probs(PROMPTS, r)
    assert total.requires_grad
    torch.testing.assert_close(total.detach(), lp, atol=1e-4, rtol=1e-5)
    n = policy.response_mask(r).sum(-1)
    torch.testing.assert_close(policy.response_log_probs(PROMPTS, r, reduction="mean").detach(), lp / n, atol=1e-5, rtol=1e-5)
    # one prompt alone (no padding at all) scores the same
    one = policy.response_log_probs(PROMPTS[2:3], r[2:3], source="ref")
    torch.testing.assert_close(one, lp[2:3], atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("arch,lora", [("gpt2", False), ("llama", True)])
def test_exact_distribution_sums_to_one_and_matches_brute_force(paths, arch, lora):
    policy = make(paths, arch, lora=lora)
    train(policy, steps=2)
    log_pi = policy.log_probs()
    assert log_pi.shape == (4, 13) and log_pi.dtype == torch.float64
    torch.testing.assert_close(log_pi.exp().sum(-1), torch.ones(4, dtype=torch.float64))
    tok, model = policy.tokenizer, policy.model
    with torch.no_grad():
        for x, prompt in enumerate(GAME.prompts):
            for y, words in enumerate(GAME.responses):
                resp = [tok.convert_tokens_to_ids(w) for w in words] + [tok.eos_token_id]
                ids = torch.tensor([tok(prompt)["input_ids"] + resp])
                lp = model(input_ids=ids).logits[0, -len(resp) - 1:-1].log_softmax(-1)
                expect = lp.gather(-1, torch.tensor(resp)[:, None]).sum()
                assert abs(log_pi[x, y].item() - expect.item()) < 1e-4, (x, words)
    assert abs(policy.invalid_mass() - log_pi[:, -1].exp().mean().item()) < 1e-12
    ref = policy.snapshot("ref")
    assert ref is policy.snapshot("ref") and not torch.allclose(ref, log_pi)  # cached; the policy moved


@pytest.mark.parametrize("lora", [False, True])
def test_mixture_endpoints_are_policy_and_ref(paths, lora):
    policy = make(paths, lora=lora, max_new_tokens=5)
    train(policy, steps=3)  # so that policy ≠ ref
    def draw(**kw):
        torch.manual_seed(3)
        return sample(policy, PROMPTS, 8, **kw)
    assert torch.equal(draw(source="mixture", mixture_coef=0.0), draw())
    assert torch.equal(draw(source="mixture", mixture_coef=1.0), draw(source="ref"))
    assert not torch.equal(draw(), draw(source="ref"))
    torch.manual_seed(4)
    r, lp = sample(policy, PROMPTS, 4, source="mixture", mixture_coef=0.5, return_log_probs=True)
    mix = policy.response_log_probs(PROMPTS, r, source="mixture", mixture_coef=0.5)
    torch.testing.assert_close(mix.detach(), lp, atol=1e-4, rtol=1e-5)
    with pytest.raises(ValueError, match="mixture_coef"):
        sample(policy, PROMPTS, 1, source="mixture", mixture_coef=1.5)
    with pytest.raises(KeyError, match="magnet"):
        sample(policy, PROMPTS, 1, source="magnet")


def _take_five(policy):
    """magnet, anchor, history, half, history again, with training in between; what each should hold."""
    taken = {}
    for step, name in enumerate(["magnet", "anchor", "history", "half", "history"]):
        if name == "history":
            policy.push_snapshot("history", maxlen=3)
            if "history/0" in taken:
                taken["history/1"] = taken["history/0"]
            name = "history/0"
        else:
            policy.refresh_snapshot(name)
        taken[name] = policy.log_probs()
        train(policy, steps=2)
    return taken


@pytest.mark.parametrize("lora", [True, False])
def test_snapshots_freeze_the_policy_and_lora_shares_base_weights(paths, lora):
    policy = make(paths, lora=lora)
    numel, trainable = base_numel(policy), [n for n, p in policy.named_parameters() if p.requires_grad]
    taken = _take_five(policy)
    assert set(policy.snapshot_names()) == {"ref", "magnet", "anchor", "half", "history/0", "history/1"}
    assert policy.has_snapshot("history") and policy.snapshot("history").shape == (2, 4, 13)
    if lora:
        assert base_numel(policy) == numel  # five snapshots, no base weight copied
    assert [n for n, p in policy.named_parameters() if p.requires_grad] == trainable
    current = policy.log_probs()
    for name, value in taken.items():
        torch.testing.assert_close(policy.log_probs(name), value, atol=1e-6, rtol=1e-6)
        assert not torch.allclose(current, value, atol=1e-4)
    # the snapshot is also what sampling and scoring see
    torch.manual_seed(0)
    r = sample(policy, PROMPTS, 2, source="magnet")
    assert policy.response_log_probs(PROMPTS, r, source="magnet").grad_fn is None
    # restore: the policy becomes the snapshot again
    policy.restore_snapshot("anchor")
    torch.testing.assert_close(policy.log_probs(), taken["anchor"], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("lora", [True, False])
def test_blend_is_an_ema_of_the_trained_tensors(paths, lora):
    """Nash-MP's moving prox center: blend_snapshot lerps each trained tensor (the LoRA adapter's, or every
    weight in full fine-tuning) and leaves the base weights alone; rate 1 is a refresh."""
    policy = make(paths, lora=lora)
    policy.refresh_snapshot("anchor")
    before = {k: v.clone() for k, v in policy.snapshots["anchor"].items()}
    train(policy, steps=2)
    numel, now = base_numel(policy), policy.trainable_state()
    policy.blend_snapshot("anchor", 0.25)
    after = policy.snapshots["anchor"]
    assert after.keys() == before.keys() == now.keys()
    for key in before:
        torch.testing.assert_close(after[key], 0.75 * before[key] + 0.25 * now[key], atol=1e-7, rtol=1e-6)
    assert any(not torch.equal(after[key], now[key]) for key in after)
    if lora:
        assert base_numel(policy) == numel
    policy.blend_snapshot("anchor", 1.0)
    torch.testing.assert_close(policy.log_probs("anchor"), policy.log_probs(), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("lora", [True, False])
def test_snapshots_survive_state_dict_round_trip(paths, lora):
    policy = make(paths, lora=lora)
    train(policy, steps=2)
    policy.refresh_snapshot("magnet")
    policy.push_snapshot("history", maxlen=2)
    train(policy, steps=2)
    policy.push_snapshot("history", maxlen=2)
    train(policy, steps=2)
    state = policy.state_dict()
    fresh = make(paths, lora=lora)
    fresh.register_checkpoint(state)
    fresh.load_state_dict(state)  # strict: every snapshot has a home
    assert fresh.snapshot_names() == policy.snapshot_names()
    for source in ("policy", "ref", "magnet", "history/0", "history/1"):
        torch.testing.assert_close(fresh.log_probs(source), policy.log_probs(source), atol=1e-7, rtol=1e-7)
    assert [n for n, p in fresh.named_parameters() if p.requires_grad] == [
        n for n, p in policy.named_parameters() if p.requires_grad
    ]


def test_fit_with_game_metrics_and_exact_resume_with_lora(paths, tmp_path):
    """The LM with LoRA trained by a real algorithm (MNPO: its history snapshots are adapter copies) through the
    Lightning loop; stopped after 2 steps and resumed, it ends bit-identical to an uninterrupted 4-step run."""
    from functools import partial

    import lightning as L

    from lit_nash.algorithms import MNPO
    from lit_nash.build import assemble
    from lit_nash.preference.token_game import TokenGameOracle
    from lit_nash.rng import RNGCheckpoint

    def fit(max_steps, ckpt=None):
        run = assemble(make(paths, lora=True), MNPO(k=2), TokenGameOracle(GAME, paths["gpt2"]), game=GAME,
                       optimizer=partial(torch.optim.AdamW, lr=0.01, weight_decay=0.0))
        trainer = L.Trainer(
            max_steps=max_steps, logger=False, enable_progress_bar=False, enable_model_summary=False,
            enable_checkpointing=False, log_every_n_steps=1, callbacks=[run.algorithm, run.metrics, RNGCheckpoint()],
            default_root_dir=tmp_path,
        )
        trainer.fit(run.policy, datamodule=run.data, ckpt_path=ckpt)
        return run, trainer

    L.seed_everything(0)
    full, _ = fit(4)
    L.seed_everything(0)
    run, trainer = fit(2)
    assert 0 <= float(trainer.callback_metrics["game/duality_gap"]) <= 1
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    L.seed_everything(1)  # the checkpoint's RNG state must win
    resumed, trainer = fit(4, ckpt=str(tmp_path / "last.ckpt"))
    assert trainer.global_step == 4 and resumed.network.snapshot_names() == ["history/0", "history/1", "ref"]
    expected = full.policy.state_dict()
    for key, value in resumed.policy.state_dict().items():  # adapters, snapshots, the base model's record
        assert torch.equal(value, expected[key]) if torch.is_tensor(value) else value == expected[key], key
    expected = dict(full.policy.named_parameters())  # the base model too: it came from its folder, not the checkpoint
    for key, value in resumed.policy.named_parameters():
        assert torch.equal(value, expected[key]), key


def test_a_lora_state_dict_holds_the_adapters_and_names_the_base_model(paths, tmp_path):
    """What a LoRA checkpoint holds (issue 23.3): no frozen base weight, every adapter and snapshot tensor, and the
    base model's folder and content hash; it loads into a policy built on a copy of that folder, and not into one
    built on another model."""
    import shutil
    from pathlib import Path

    from lit_nash.policy.base_model import content_hash

    policy = make(paths, lora=True)
    train(policy, steps=2)
    policy.refresh_snapshot("magnet")
    state = policy.state_dict()
    frozen = {n for n, p in policy.named_parameters() if not p.requires_grad}
    assert frozen and not frozen & state.keys()
    tensors = {k for k, v in state.items() if torch.is_tensor(v)}
    assert tensors == {n for n, p in policy.named_parameters() if p.requires_grad} | {
        k for k in state if k.startswith("snapshots.")} | {n for n, _ in policy.named_buffers() if n in state}
    assert state["base_model._extra_state"] == {"base_model": {"path": str(Path(paths["gpt2"]).resolve()),
                                                                "sha256": content_hash(paths["gpt2"])}}
    shutil.copytree(paths["gpt2"], tmp_path / "moved")
    fresh = CausalLMPolicy(str(tmp_path / "moved"), game=GAME, max_new_tokens=4, lora=LORA["gpt2"])
    fresh.register_checkpoint(state)
    fresh.load_state_dict(state)  # strict: the missing base weights are the folder's
    torch.testing.assert_close(fresh.log_probs("magnet"), policy.log_probs("magnet"), atol=0, rtol=0)
    other = make(paths, "llama", lora=True)
    with pytest.raises(ValueError, match="belong to the base model"):
        other.base_model.set_extra_state(state["base_model._extra_state"])


def test_nan_weights_are_a_named_numerical_error_in_sampling_and_scoring(paths):
    from lit_nash.guards import NumericalError

    policy = make(paths)
    with torch.no_grad():
        policy.model.transformer.wte.weight[:] = float("nan")
    with pytest.raises(NumericalError, match="non-finite logits of 'policy' while sampling"):
        sample(policy, PROMPTS, 2)
    R, L = policy.response_ids.shape
    with pytest.raises(NumericalError, match="non-finite log-probs of 'policy'"):
        policy.response_log_probs(PROMPTS, policy.response_ids.expand(len(PROMPTS), R, L))


def default_lora() -> dict:
    """policy=causal_lm_lora's own LoRA keywords, read from its YAML."""
    import yaml

    from tests.cli import REPO

    return yaml.safe_load((REPO / "conf" / "policy" / "causal_lm_lora.yaml").read_text())["lora"]


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_default_lora_adapts_every_linear_layer_of_gpt2_and_llama(paths, arch):
    """Issue 15: the default used to name GPT-2's c_attn/c_proj, and on a Llama model peft raised
    NoMatchingPeftModuleError. `all-linear` adapts every Linear/Conv1D layer but the LM head, and
    fan_in_fan_out follows the model (Conv1D: true), so peft has nothing to correct (no warning)."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*fan_in_fan_out.*")
        policy = CausalLMPolicy(paths[arch], game=GAME, lora=default_lora(), max_new_tokens=4)
    adapted = {n.rsplit(".", 1)[-1] for n, m in policy.model.named_modules() if hasattr(m, "lora_A")}
    expected = {"gpt2": {"c_attn", "c_proj", "c_fc"},
                "llama": {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}}[arch]
    assert adapted == expected
    assert all(not hasattr(m, "lora_A") for n, m in policy.model.named_modules() if n.endswith("lm_head"))
    assert all("lora_" in n for n, p in policy.model.named_parameters() if p.requires_grad)
    ids = policy.response_ids.expand(len(PROMPTS), *policy.response_ids.shape)
    before = policy.response_log_probs(PROMPTS, ids).detach()
    train(policy, steps=2, lr=1e-3)
    assert all(p.abs().sum() > 0 for n, p in policy.model.named_parameters() if "lora_B" in n)  # B starts at 0
    assert not torch.equal(policy.response_log_probs(PROMPTS, ids), before)  # the adapters train


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_gradient_checkpointing_gives_the_same_samples_log_probs_and_gradients(paths, arch, lora):
    """policy.gradient_checkpointing only trades memory for time: decoding keeps its KV cache (transformers
    would drop it in train mode), and the loss's gradients equal the stored-activation ones."""
    torch.manual_seed(0)  # LoRA's A starts random: both policies draw the same one
    plain = make(paths, arch, lora=lora)
    torch.manual_seed(0)
    checkpointed = make(paths, arch, lora=lora, gradient_checkpointing=True)
    assert any(getattr(m, "gradient_checkpointing", False) for m in checkpointed.model.modules())
    a, b = sample(plain, PROMPTS, k=3, seed=7), sample(checkpointed, PROMPTS, k=3, seed=7)
    assert torch.equal(a, b)
    grads = []
    for policy in (plain, checkpointed):
        policy.response_log_probs(PROMPTS, a).sum().backward()
        grads.append([p.grad for p in policy.trainable_parameters()])
        with torch.no_grad():
            ref = policy.response_log_probs(PROMPTS, a, source="ref")
    assert checkpointed.model.training  # the no-grad forwards ran in eval mode and came back
    for g, h in zip(*grads):
        torch.testing.assert_close(g, h, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ref, plain.response_log_probs(PROMPTS, a, source="ref").detach())


def test_a_bf16_base_decodes_its_fp32_lora_adapter_in_bf16_and_trains_it_in_fp32(paths):
    """peft keeps the adapter of a bf16 base in fp32; decoding runs it in bf16 (no casts in every layer), and
    afterwards the adapter is the same fp32 tensors the optimizer trains. The decoded log-probs are the
    bf16-adapter model's, within bf16 rounding of the training model's (the generator log-prob gap)."""
    torch.manual_seed(0)
    policy = make(paths, "llama", lora=True, dtype="bfloat16")
    train(policy)  # B ≠ 0: the adapter matters
    adapter = {n: p for n, p in policy.model.named_parameters() if p.requires_grad}
    assert {p.dtype for p in adapter.values()} == {torch.float32}
    before = {n: p.detach().clone() for n, p in adapter.items()}
    seen = []
    hook = policy.model.register_forward_pre_hook(lambda m, a: seen.append({p.dtype for p in adapter.values()}))
    responses, decoded = sample(policy, PROMPTS, k=4, seed=3, return_log_probs=True)
    hook.remove()
    assert seen and all(s == {torch.bfloat16} for s in seen)  # every decoding forward ran the adapter in bf16
    assert all(p.dtype == torch.float32 and torch.equal(p, before[n]) for n, p in adapter.items())
    assert all(p is q for p, q in zip(adapter.values(), policy.trainable_parameters()))
    trained = policy.response_log_probs(PROMPTS, responses).detach()
    torch.testing.assert_close(decoded, trained, atol=0.03, rtol=0)  # measured 0.0032 on sums of mean |8.3|


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_decoding_never_copies_the_output_head_per_row(paths, lora):
    """The prompt step keeps only the last position (a strided view); fed as is, torch.matmul expands the
    (vocabulary x width) head weight to every row and copies it (0.9 GB and 2.7 s per decode of SmolLM2 with
    LoRA in bf16; with a frozen head, i.e. LoRA). No op of a decode may make the head weight a batch of matrices."""
    from torch.utils._python_dispatch import TorchDispatchMode

    policy = make(paths, "llama", lora=lora, max_new_tokens=3)
    head = tuple(policy.model.get_output_embeddings().weight.shape)
    expanded = []

    class Watch(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if isinstance(out, torch.Tensor) and out.dim() == 3 and {tuple(out.shape[1:]), tuple(out.shape[1:])[::-1]} & {head}:
                expanded.append((str(func), tuple(out.shape)))
            return out

    with Watch():
        sample(policy, PROMPTS, k=2, seed=0)
    assert not expanded, expanded
