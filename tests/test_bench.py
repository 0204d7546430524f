"""``python -m lit_nash bench`` runs through the real CLI on a tiny config and prints one JSON line with
every field (no timing assertions: figures are measured with the command, docs/performance.md)."""

import json
import os
from pathlib import Path
import shutil
import subprocess

import pytest

from tests.cli import run_cli, run_many

TINY = ["bench.spec.n_layer=1", "bench.spec.n_embd=32", "bench.spec.n_head=2", "bench.spec.prompts=16",
        "bench.spec.prompt_words=4", "bench.spec.vocab_words=60", "policy.max_new_tokens=4",
        "rollout.prompts_per_step=2", "trainer.max_steps=4", "bench.warmup=1", "bench.threads=1",
        "bench.dynamics.games=20", "bench.dynamics.steps=10", "bench.dynamics.algos=[mpo,egpo]"]


@pytest.mark.parametrize("algo,precision", [("online_ipo", "32-true"), ("nash_md", "32-true"), ("online_ipo", "bf16-mixed")])
def test_bench_prints_one_json_line_with_every_field(tmp_path, algo, precision):
    done = run_cli("bench", f"algo={algo}", f"trainer.precision={precision}", *TINY, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["algo"] == algo and result["steps"] == 4 and result["measured_steps"] == 3
    split = result["split_s"]
    assert set(split) == {"generate", "preference", "logprobs", "update", "other"}
    assert split["generate"] > 0 and split["preference"] > 0 and split["update"] > 0
    assert result["median_step_s"] >= split["generate"]
    assert result["prompts_per_s"] > 0 and result["generated_tokens_per_s"] > 0 and result["peak_memory_mb"] > 0
    assert result["preference_passes_per_step"] > 0  # the spec's Bradley–Terry reward model
    assert result["generation_tokens_per_s"] > result["generated_tokens_per_s"]  # over generation's seconds alone
    assert result["versions"]["torch"].startswith("2.") and result["memory"] == "max_rss"
    # the floor: the spec's GPT-2 parameters (1 layer, width 32, 64-token vocabulary) counted from the config,
    # their gradients and AdamW's two moments, the reference snapshot (a full copy), a reward model of the
    # same shape; on a CPU the peak RSS adds the runtime to it
    floor = result["memory_floor_mb"]
    assert set(floor) == {"snapshots", "parameters", "gradients", "optimizer_state", "preference", "saved_iterate", "total"}
    assert floor["gradients"] == pytest.approx(floor["parameters"], rel=0.01)  # full fine-tuning, fp32
    assert floor["optimizer_state"] == pytest.approx(2 * floor["parameters"], rel=0.01)  # AdamW's exp_avg, exp_avg_sq
    assert floor["snapshots"] == pytest.approx(floor["parameters"], rel=0.01)  # ref
    assert floor["total"] == pytest.approx(sum(v for k, v in floor.items() if k != "total"), abs=0.01)
    assert 0 < floor["total"] < result["peak_memory_mb"]
    assert result["config"] == {"prompts_per_step": 2, "max_new_tokens": 4, "k": result["config"]["k"],
                                "dtype": "float32", "precision": precision, "lr": 1e-05, "lora": False}
    # the CPU's bf16 features, as lscpu (a second reader of the same kernel report) names them
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout if shutil.which("lscpu") else ""
    flags = next((line.split(":", 1)[1].split() for line in lscpu.splitlines() if line.startswith("Flags")), None)
    assert result["bf16"]["device"] == "cpu"
    if flags is not None:
        assert result["bf16"]["cpu_flags"] == [f for f in ("amx_bf16", "avx512_bf16") if f in flags]
        assert result["bf16"]["fast"] == bool(result["bf16"]["cpu_flags"])
    dyn = result["dynamics"]
    assert (dyn["games"], dyn["actions"], dyn["steps"]) == (20, 10, 10) and set(dyn["seconds"]) == {"mpo", "egpo"}
    # MFU: the FLOPs counted on the warm-up step; the update is a forward and a backward (2 matrix products per
    # forward one, and the chunked head recomputes its logits) over the responses the reference pass scores once
    assert set(result["matmul_tflops"]) == {"bfloat16", "float32"} and min(result["matmul_tflops"].values()) > 0
    flops = result["flops"]
    assert flops["logprobs"] > 0 and 2.5 < flops["update"] / flops["logprobs"] < 4, flops
    assert set(result["mfu"]) == {"update", "logprobs"} and all(v > 0 for v in result["mfu"].values())


def test_preference_passes_per_step_grow_with_samples_for_gpm_and_with_pairs_for_pairwise(tmp_path):
    """INPO labels all k(k − 1)/2 pairs of its k = 8 samples: the pairwise classifier reads each in both orders,
    2 prompts × 56 = 112 sequences a step; the GPM reads each distinct response once and each prompt once for
    its gate, at most 2 × (8 + 1) = 18 (fewer when samples repeat)."""
    tiny = [a for a in TINY if not a.startswith("bench.dynamics")] + ["bench.dynamics=null", "bench.mfu=false"]
    for kind in ("gpm", "pairwise"):
        (tmp_path / kind).mkdir()
    outs = run_many(*((("bench", "algo=inpo", f"preference={kind}", *tiny), {"cwd": tmp_path / kind})
                      for kind in ("gpm", "pairwise")))
    passes = {}
    for kind, done in zip(("gpm", "pairwise"), outs):
        assert done.returncode == 0, done.stderr[-3000:]
        result = json.loads(done.stdout.strip().splitlines()[-1])
        assert result["config"]["k"] == 8 and result["config"]["prompts_per_step"] == 2
        passes[kind] = result["preference_passes_per_step"]
    assert passes["pairwise"] == 2 * 8 * 7
    assert 2 * 2 <= passes["gpm"] <= 2 * (8 + 1), passes


def test_online_ipo_one_preference_call_equals_the_two_call_path(tmp_path):
    """The optimization: y and y' meet y'' in one preference call (a reward model scores y'' once, not twice).
    The target must equal the straightforward path's, P(y ≻ y'') − P(y' ≻ y''), from two calls."""
    import torch

    from lit_nash.algorithms import OnlineIPO
    from lit_nash.generation import HFGenerator, SamplingGroup
    from lit_nash.models import tiny_causal_lm, tiny_sequence_classifier
    from lit_nash.policy import CausalLMPolicy
    from lit_nash.preference import BradleyTerryReward
    from lit_nash.rollout import Rollouts, label

    words = "a b c d e f g h".split()
    reward = BradleyTerryReward(str(tiny_sequence_classifier(tmp_path / "r", words, num_labels=1, seed=1)), batch_size=5)
    algo = OnlineIPO(k=2)
    policy = CausalLMPolicy(str(tiny_causal_lm(tmp_path / "p", words, seed=2)), prompts=["a b", "c", "d e f"],
                            max_new_tokens=4)
    generator = HFGenerator(policy)
    prompt = torch.arange(3)
    torch.manual_seed(0)
    batch = algo.rollout(Rollouts(policy, generator, reward), prompt)
    torch.manual_seed(0)  # the same samples, drawn in the same order
    (pair,) = generator.generate(prompt, [SamplingGroup(k=4, temperature=algo.proposal_temperature, top_k=algo.proposal_top_k)])
    (third,) = generator.generate(prompt, [SamplingGroup(k=2)])
    pair, third = pair.responses, third.responses
    assert torch.equal(pair, batch.responses)
    two_calls = (label(reward, prompt, pair[:, :2], third, reader=policy)
                 - label(reward, prompt, pair[:, 2:], third, reader=policy))
    torch.testing.assert_close(batch.target * algo.tau, two_calls, atol=1e-6, rtol=0)


REAL_MODELS = Path(os.environ.get("LIT_NASH_REAL_MODELS", "/work/real_models"))
INSTRUCTIONS = Path(__file__).resolve().parents[1] / "data" / "instructions.jsonl"


def test_the_real_model_spec_is_the_issue_s_spec(monkeypatch):
    """task=bench_real (issue 15.4): SmolLM2 with LoRA r = 16 on all linear layers, 8 prompts × 2 samples ×
    64 new tokens from instructions.jsonl, MiniLM as the pairwise judge."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    with initialize_config_module(config_module="lit_nash.conf", version_base="1.3"):
        monkeypatch.setenv("LIT_NASH_REAL_MODELS", "/models")
        cfg = compose("bench", overrides=["task=bench_real"])
    assert cfg.policy.model_path == "/models/smollm2-135m-instruct" and cfg.preference.path == "/models/all-minilm-l6-v2"
    assert OmegaConf.is_missing(cfg.data, "path")  # the prompt file is the user's to give
    assert cfg.policy.lora.r == 16 and cfg.policy.lora.target_modules == "all-linear"
    assert (cfg.rollout.prompts_per_step, cfg.policy.max_new_tokens, cfg.algo.k) == (8, 64, 1)  # 1 pair: 2 samples
    assert cfg.algo._target_.endswith("OnlineIPO")  # the step the issue compares with TRL's Online DPO
    assert cfg.preference._target_.endswith("PairwiseClassifier") and cfg.policy._target_.endswith("CausalLMPolicy")
    assert cfg.preference.allow_new_weights  # the prepared MiniLM has no trained head; bench measures its cost


@pytest.mark.slow
@pytest.mark.skipif(not (REAL_MODELS / "smollm2-135m-instruct").is_dir() or not INSTRUCTIONS.is_file(),
                    reason=f"no real models in {REAL_MODELS}: python scripts/prepare_real_models.py {REAL_MODELS}")
def test_bench_runs_the_real_model_spec(tmp_path):
    done = run_cli("bench", "task=bench_real", f"policy.model_path={REAL_MODELS / 'smollm2-135m-instruct'}",
                   f"preference.path={REAL_MODELS / 'all-minilm-l6-v2'}", f"data.path={INSTRUCTIONS}",
                   "trainer.max_steps=2", "bench.warmup=1", "policy.max_new_tokens=4", "bench.dynamics=null",
                   cwd=tmp_path, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["config"]["lora"] is True and result["measured_steps"] == 1 and result["algo"] == "online_ipo"
    assert result["peak_memory_mb"] > result["runtime_mb"] > 0
