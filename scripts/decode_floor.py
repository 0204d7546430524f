"""The compute floor of one decoding step of SmolLM2-135M-Instruct on this CPU, one torch thread
(docs/performance.md, "the 3x goal"): the matrix products a decoding step cannot avoid (every linear layer
and the output head, for a batch of 16 rows, one new token each), timed bare, without attention, sampling
or any framework. A generator's tokens/s cannot exceed 16 / (this time); the ratio of two generators cannot
exceed (the slower one's time per step) / (this time).

    python scripts/decode_floor.py [MODEL_DIR] [--rows 16] [--dtypes float32,bfloat16]
"""

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402


def step_seconds(weights: list[torch.Tensor], rows: int, repeats: int = 20) -> float:
    """Median seconds of one pass of x @ W.T over every weight, x of shape (rows, in)."""
    xs = [torch.randn(rows, w.shape[1], dtype=w.dtype) for w in weights]
    for x, w in zip(xs, weights):  # warm-up
        torch.nn.functional.linear(x, w)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for x, w in zip(xs, weights):
            torch.nn.functional.linear(x, w)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model", nargs="?", default=os.path.join(os.environ.get("LIT_NASH_REAL_MODELS", "real_models"),
                                                                   "smollm2-135m-instruct"))
    parser.add_argument("--rows", type=int, default=16, help="sequences decoded together (8 prompts x 2 samples)")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for dtype in args.dtypes.split(","):
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=getattr(torch, dtype), use_safetensors=True)
        weights = [m.weight.detach() for m in model.modules() if isinstance(m, torch.nn.Linear)]
        seconds = step_seconds(weights, args.rows)
        flops = 2 * args.rows * sum(w.numel() for w in weights)
        print(json.dumps({"dtype": dtype, "rows": args.rows, "linear_layers": len(weights),
                          "matmul_s_per_step": round(seconds, 4), "gflops": round(flops / seconds / 1e9, 1),
                          "ceiling_tokens_per_s": round(args.rows / seconds, 1)}), flush=True)


if __name__ == "__main__":
    main()
