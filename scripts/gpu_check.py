"""The GPU check (issue 24, item 5): FSDP2 bf16 training steps of a random-init Llama-shaped model of about
0.5B parameters through lit_nash's engine, with the hf generator, measured by ``python -m lit_nash bench``.

No weights travel to the device machine, so everything is built where it runs: a word-level tokenizer of
32000 words, a Llama of 16 layers, width 1280, 10 heads, intermediate size 5120 (0.50B parameters, untied
head), a tiny Bradley-Terry reward model over the same words, and 512 prompts of 16 random words. Then one
``bench`` run: online IPO with 2 samples per prompt (Online DPO's shape), 64 prompts per step, 128 new tokens,
``trainer=fsdp`` on one device (bf16-mixed over fp32 master weights), 8 steps of which 2 are warm-up (their
FLOPs are counted). It prints, and writes to ``OUT/gpu_check.json``: the update's MFU against the device's
measured bf16 matrix-product rate, generation tokens/s, peak memory, the step and its split. Under 8 minutes
on an H200 (start-up about a minute); ``--tiny`` runs the same path at a toy size on a CPU in seconds.

    python scripts/gpu_check.py [--tiny] [--out DIR] [--steps 8] [--prompts-per-step 64] [--max-new-tokens 128]

On the device machine, as one command: ``bash scripts/gpu_check.sh`` (it installs the carried wheels first).
"""

import argparse
import json
import math
import os
import random
import subprocess
import sys
import time
from pathlib import Path

FULL = dict(n_layer=16, n_embd=1280, n_head=10, words=32000)  # 0.50B parameters
TINY = dict(n_layer=2, n_embd=64, n_head=2, words=500)


def build(root: Path, size: dict, prompts: int, prompt_words: int, positions: int) -> dict[str, str]:
    """The policy, the reward model and the prompt file, written under ``root``; their paths."""
    from lit_nash.models import tiny_causal_lm, tiny_sequence_classifier

    words = [f"w{i}" for i in range(size["words"])]
    policy = tiny_causal_lm(root / "policy", words, arch="llama", n_layer=size["n_layer"], n_embd=size["n_embd"],
                            n_head=size["n_head"], max_positions=positions, seed=0)
    reward = tiny_sequence_classifier(root / "reward", words, num_labels=1, max_positions=positions, seed=1)
    rng = random.Random(0)
    data = root / "prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": " ".join(rng.choice(words) for _ in range(prompt_words))}) + "\n"
                            for _ in range(prompts)))
    return {"policy": str(policy), "reward": str(reward), "prompts": str(data)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a toy model: the same path in seconds, on a CPU too")
    parser.add_argument("--out", default=os.environ.get("OUT", "gpu_check_out"))
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--prompts-per-step", type=int, default=None, help="default 64 (--tiny: 4)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default 128 (--tiny: 8)")
    args = parser.parse_args()
    import torch

    start = time.perf_counter()
    cuda = torch.cuda.is_available()
    size = TINY if args.tiny else FULL
    per_step = args.prompts_per_step or (4 if args.tiny else 64)
    new_tokens = args.max_new_tokens or (8 if args.tiny else 128)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    paths = build(out / "models", size, prompts=max(64, 4 * per_step), prompt_words=16, positions=32 + new_tokens)
    built = time.perf_counter() - start
    overrides = [
        "task=bench", "algo=online_ipo", "algo.variant=2", f"policy.model_path={paths['policy']}",
        f"preference.path={paths['reward']}", f"data.path={paths['prompts']}", f"policy.max_new_tokens={new_tokens}",
        f"rollout.prompts_per_step={per_step}", "trainer=fsdp", "trainer.devices=1", f"trainer.max_steps={args.steps}",
        f"bench.warmup={args.warmup}", "bench.threads=null", "bench.dynamics=null", f"hydra.run.dir={out / 'bench'}",
    ] + ([] if cuda else ["trainer.accelerator=cpu"])
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # from the output folder: a checkout's lit_nash/ (without its conf/ package) must not shadow the installed one
    done = subprocess.run([sys.executable, "-m", "lit_nash", "bench", *overrides], capture_output=True, text=True,
                          env=env, cwd=out)
    (out / "bench.log").write_text(done.stderr)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-6000:])
        raise SystemExit(f"gpu_check: bench failed with exit code {done.returncode} (log: {out / 'bench.log'})")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    params = _parameters(paths["policy"])
    summary = {
        "device": result["bf16"]["device"], "parameters": params, "precision": result["config"]["precision"],
        "update_mfu_vs_bf16": result["mfu"]["update"], "logprobs_mfu_vs_bf16": result["mfu"]["logprobs"],
        "matmul_tflops": result["matmul_tflops"], "update_gflop_per_step": round(result["flops"]["update"] / 1e9, 1),
        "generation_tokens_per_s": round(result["generation_tokens_per_s"], 1),
        "peak_memory_gb": round(result["peak_memory_mb"] / 1024, 2), "memory": result["memory"],
        "median_step_s": round(result["median_step_s"], 3), "split_s": {k: round(v, 3) for k, v in result["split_s"].items()},
        "rows_per_step": 2 * per_step, "max_new_tokens": new_tokens, "build_s": round(built, 1),
        "wall_s": round(time.perf_counter() - start, 1), "versions": result["versions"],
    }
    (out / "gpu_check.json").write_text(json.dumps({"summary": summary, "bench": result}, indent=1))
    print(json.dumps(summary), flush=True)


def _parameters(path: str) -> int:
    """The policy's parameter count, read from its safetensors header (no weights loaded)."""
    from safetensors import safe_open

    with safe_open(str(Path(path) / "model.safetensors"), "pt") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())


if __name__ == "__main__":
    main()
