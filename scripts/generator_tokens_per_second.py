"""Tokens/s of the generators side by side on SmolLM2-135M-Instruct: the hf generator, vLLM eager
(``enforce_eager=true``) and vLLM compiled (the shipped default: torch.compile on a CPU, CUDA graphs on a GPU).
8 chat prompts from a prompt file, 2 samples each, up to 64 new tokens, one torch thread; after a warm-up call
(vLLM: the engine's start-up, compilation, the first push), the median of 3 seeded calls. Tokens are the
generated ones up to and including EOS. One JSON line per (dtype, generator), with the start-up seconds.

    python scripts/generator_tokens_per_second.py [MODEL_DIR] --prompts PROMPTS.jsonl \\
        [--dtypes float32,bfloat16] [--generators hf,eager,compiled] [--prompt-count 8] [--max-new-tokens 64]
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
os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")  # stdout holds the JSON lines only

import torch  # noqa: E402

from lit_nash.generation import HFGenerator, SamplingGroup, VLLMGenerator  # noqa: E402
from lit_nash.policy.causal_lm import CausalLMPolicy  # noqa: E402

GENERATORS = {
    "hf": lambda policy: HFGenerator(policy),
    "eager": lambda policy: VLLMGenerator(policy, enforce_eager=True, max_model_len=2048),
    "compiled": lambda policy: VLLMGenerator(policy, enforce_eager=False, max_model_len=2048),
}


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
    parser.add_argument("--prompts", default=str(Path(__file__).resolve().parents[1] / "data" / "instructions.jsonl"),
                        help="a JSONL prompt file with a 'prompt' field per line (default: the repository's own)")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--generators", default="hf,eager,compiled", help=f"some of {','.join(GENERATORS)}")
    parser.add_argument("--prompt-count", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()
    unknown = sorted(set(args.generators.split(",")) - set(GENERATORS))
    if unknown:
        parser.error(f"--generators: unknown {unknown}; choose from {sorted(GENERATORS)}")
    torch.set_num_threads(1)
    lines = Path(args.prompts).read_text().splitlines()[: args.prompt_count]
    prompts = [json.loads(line)["prompt"] for line in lines]
    prompt = torch.arange(len(prompts))
    for dtype in args.dtypes.split(","):
        policy = CausalLMPolicy(args.model, prompts=prompts, max_new_tokens=args.max_new_tokens, dtype=dtype)
        for name in args.generators.split(","):
            start = time.perf_counter()
            generator = GENERATORS[name](policy)
            median, rates = rate(generator, policy, prompt)
            print(json.dumps({"dtype": dtype, "generator": name, "tokens_per_s": round(median, 1),
                              "calls": [round(r, 1) for r in rates],
                              "with_start_up_s": round(time.perf_counter() - start, 1)}), flush=True)
            del generator


if __name__ == "__main__":
    main()
