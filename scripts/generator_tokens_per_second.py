"""Tokens/s of the hf and vllm generators on SmolLM2-135M-Instruct: 8 chat prompts from instructions.jsonl,
2 samples each, up to 64 new tokens, one torch thread; after a warm-up call, the median of 3 seeded calls.
Tokens are the generated ones up to and including EOS.

    python scripts/generator_tokens_per_second.py [MODEL_DIR] [--dtypes float32,bfloat16] [--compiled]
"""

import argparse
import json
import os
import statistics
import time
from pathlib import Path

for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[key] = "1"
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from lit_nash.generation import HFGenerator, SamplingGroup, VLLMGenerator  # noqa: E402
from lit_nash.policy.causal_lm import CausalLMPolicy  # noqa: E402


def rate(generator, policy, prompt, calls=3):
    generator.generate(prompt, [SamplingGroup(k=2, seed=100)])  # warm-up (vLLM: start-up, first push)
    rates = []
    for i in range(calls):
        start = time.perf_counter()
        (samples,) = generator.generate(prompt, [SamplingGroup(k=2, seed=i)])
        seconds = time.perf_counter() - start
        rates.append(int(policy.response_mask(samples.responses).sum()) / seconds)
    return statistics.median(rates), rates


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model", nargs="?", default=os.path.join(os.environ.get("LIT_NASH_REAL_MODELS", "real_models"),
                                                                   "smollm2-135m-instruct"))
    parser.add_argument("--prompts", default=str(Path(__file__).resolve().parents[1] / "data" / "instructions.jsonl"))
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--compiled", action="store_true", help="also vLLM with enforce_eager=false (minutes of compilation)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    prompts = [json.loads(line)["prompt"] for line in Path(args.prompts).read_text().splitlines()[:8]]
    prompt = torch.arange(len(prompts))
    for dtype in args.dtypes.split(","):
        policy = CausalLMPolicy(args.model, prompts=prompts, max_new_tokens=64, dtype=dtype)
        variants = [("hf", lambda: HFGenerator(policy)),
                    ("vllm eager", lambda: VLLMGenerator(policy, enforce_eager=True, max_model_len=2048))]
        if args.compiled:
            variants.append(("vllm compiled", lambda: VLLMGenerator(policy, enforce_eager=False, max_model_len=2048)))
        for name, make in variants:
            start = time.perf_counter()
            generator = make()
            median, rates = rate(generator, policy, prompt)
            print(json.dumps({"dtype": dtype, "generator": name, "tokens_per_s": round(median, 1),
                              "calls": [round(r, 1) for r in rates],
                              "with_start_up_s": round(time.perf_counter() - start, 1)}), flush=True)
            del generator


if __name__ == "__main__":
    main()
