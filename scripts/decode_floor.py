"""What bounds one decoding step of SmolLM2-135M-Instruct on this CPU, one torch thread (docs/performance.md,
"What bounds decoding"). A step of ``rows`` sequences runs every linear layer and the output head once per row
(attention over a short context adds a few percent) and reads every weight once. So its time is at least

* its matrix-product FLOPs (2 x rows x the weights' elements) over this CPU's peak product rate, measured on a
  large square product in the same dtype (the best kernel torch has; an engine's prepacked kernels can come
  closer to it on small products, never above it), and
* its weight bytes over the memory bandwidth, measured as a large copy (bytes read and written).

Each bound gives a ceiling on tokens/s (rows / seconds). For comparison it also times torch's own products at
the decode shapes, bare (``linear_s_per_step``: the old "ceiling", which a better kernel beats). Every figure is
the best of ``--repeats`` interleaved rounds, so that a busy moment of a shared machine does not lower it.

    python scripts/decode_floor.py [MODEL_DIR] [--rows 16] [--dtypes float32,bfloat16] [--repeats 5]
"""

import argparse
import json
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402


def best(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model", nargs="?", default=os.path.join(os.environ.get("LIT_NASH_REAL_MODELS", "real_models"),
                                                                   "smollm2-135m-instruct"))
    parser.add_argument("--rows", type=int, default=16, help="sequences decoded together (8 prompts x 2 samples)")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--square", type=int, default=1024, help="side of the square product the peak is measured on")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for dtype in args.dtypes.split(","):
        dt = getattr(torch, dtype)
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dt, use_safetensors=True)
        weights = [m.weight.detach() for m in model.modules() if isinstance(m, torch.nn.Linear)]
        xs = [torch.randn(args.rows, w.shape[1], dtype=dt) for w in weights]
        a, b = (torch.randn(args.square, args.square, dtype=dt) for _ in range(2))
        big = torch.empty(2**27, dtype=torch.uint8)  # 128 MiB, larger than any cache
        copy = torch.empty_like(big)
        linear = square = moved = float("inf")
        for _ in range(args.repeats):  # interleaved, each the best of 3
            linear = min(linear, best(lambda: [torch.nn.functional.linear(x, w) for x, w in zip(xs, weights)], 3))
            square = min(square, best(lambda: a @ b, 3))
            moved = min(moved, best(lambda: copy.copy_(big), 3))
        flops = 2 * args.rows * sum(w.numel() for w in weights)
        weight_bytes = sum(w.numel() * w.element_size() for w in weights)
        peak = 2 * args.square**3 / square
        bandwidth = 2 * big.numel() / moved  # read + write
        print(json.dumps({
            "dtype": dtype, "rows": args.rows, "linear_layers": len(weights),
            "gflop_per_step": round(flops / 1e9, 2), "weight_mb": round(weight_bytes / 2**20, 1),
            "peak_gflops": round(peak / 1e9, 1), "bandwidth_gb_s": round(bandwidth / 1e9, 1),
            "compute_ceiling_tokens_per_s": round(args.rows / (flops / peak), 1),
            "bandwidth_ceiling_tokens_per_s": round(args.rows / (weight_bytes / bandwidth), 1),
            "linear_s_per_step": round(linear, 4), "linear_gflops": round(flops / linear / 1e9, 1),
            "linear_tokens_per_s": round(args.rows / linear, 1),
        }), flush=True)


if __name__ == "__main__":
    main()
