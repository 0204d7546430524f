"""Calibrates ``generator.max_logprob_gap``: the mean |log π_vLLM − log π_t| per token of vLLM's samples
against the training model's log-probs of them, on a real model, when the engine holds the right weights
(fp32 and bf16, full fine-tuning and LoRA, before and after an optimizer step and its push) and when its push
left out one layer after that step (what the check must catch). One JSON line per case.

    python scripts/vllm_logprob_gap.py [MODEL_DIR] --prompts PROMPTS.jsonl [--dtypes float32,bfloat16]
"""

import argparse
import json
import os
from pathlib import Path

for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[key] = "1"
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")  # stdout holds the JSON lines only

import torch  # noqa: E402

from lit_nash.generation import SamplingGroup, VLLMGenerator  # noqa: E402
from lit_nash.policy.causal_lm import CausalLMPolicy  # noqa: E402

LORA = {"r": 16, "lora_alpha": 32, "target_modules": "all-linear"}


def gaps(policy, generator, prompt, calls):
    """Per call: the mean over samples of |summed log-prob difference| / tokens, and its largest sample."""
    out = []
    for seed in range(calls):
        (s,) = generator.generate(prompt, [SamplingGroup(k=2, seed=seed)], return_log_probs=True)
        with torch.no_grad():
            mine = policy.response_log_probs(prompt, s.responses)
        per_token = (s.log_probs - mine).abs() / policy.response_mask(s.responses).sum(-1).clamp(min=1)
        out.append((round(float(per_token.mean()), 6), round(float(per_token.max()), 6)))
    return out


def step(policy, prompt, lr):
    """One AdamW step on the policy's own greedy-ish samples: the weights move as training moves them."""
    from lit_nash.generation import HFGenerator

    (s,) = HFGenerator(policy).generate(prompt, [SamplingGroup(k=1, seed=0)])
    opt = torch.optim.AdamW(policy.trainable_parameters(), lr=lr)
    (-policy.response_log_probs(prompt, s.responses).mean()).backward()
    opt.step()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model", nargs="?", default=os.path.join(os.environ.get("LIT_NASH_REAL_MODELS", "real_models"),
                                                               "smollm2-135m-instruct"))
    parser.add_argument("--prompts", required=True)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    args = parser.parse_args()
    torch.set_num_threads(1)
    prompts = [json.loads(line)["prompt"] for line in Path(args.prompts).read_text().splitlines()[:8]]
    prompt = torch.arange(len(prompts))
    for dtype in args.dtypes.split(","):
        for lora in (None, LORA):
            torch.manual_seed(0)
            policy = CausalLMPolicy(args.model, prompts=prompts, max_new_tokens=args.max_new_tokens, dtype=dtype, lora=lora)
            generator = VLLMGenerator(policy, enforce_eager=True, max_model_len=1024, kv_cache_gib=0.5)
            case = {"dtype": dtype, "lora": lora is not None}
            print(json.dumps(case | {"when": "start", "gap_per_token": gaps(policy, generator, prompt, args.calls)}), flush=True)
            step(policy, prompt, lr=5e-5 if lora else 1e-5)
            print(json.dumps(case | {"when": "after a step", "gap_per_token": gaps(policy, generator, prompt, args.calls)}), flush=True)
            push = generator._state
            generator._state = lambda model, snapshot: ((n, t) for n, t in push(model, snapshot) if ".layers.1." not in n)
            step(policy, prompt, lr=5e-5 if lora else 1e-5)
            print(json.dumps(case | {"when": "after a step, layer 1 not pushed",
                                     "gap_per_token": gaps(policy, generator, prompt, args.calls)}), flush=True)
            del generator


if __name__ == "__main__":
    main()
