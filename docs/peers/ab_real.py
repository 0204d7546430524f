"""The A/B against TRL on the real-model spec (issue 24's goals), interleaved in one window: lit_nash's `bench
task=bench_real` (online IPO with 2 samples per prompt, Online DPO's shape) and TRL 1.13.0's Online DPO at its best
CPU settings (docs/peers/trl_bench_real.py: bf16 policy weights, no gradient checkpointing), run one after the
other per round, in ABBA order (lit, TRL, TRL, lit, ...) so that a drift of the machine's speed cancels out.

Variants: {lora, full} x bf16; lit_nash with the hf generator and with vLLM compiled (the shipped default of
generator=vllm; its KV pool sized to the step), TRL without vLLM (its vLLM path was not tried on the CPU). Every run
is its own process with 1 torch thread; each records the load average and the CPU seconds other processes used
during it (`other_cores_busy`: 0 on a quiet box, 1 when another process kept a core busy), so contended runs can
be told apart. A compiled vLLM engine's first start compiles (about a minute, then cached in ~/.cache/vllm); a
warm-up run of each vLLM variant before the rounds keeps compilation out of the measured ones.

    # TRL in a throwaway venv (never a lit_nash dependency):
    python -m venv /tmp/trl_real/venv && /tmp/trl_real/venv/bin/pip install torch==2.13.0 \\
        && /tmp/trl_real/venv/bin/pip install torch==2.13.0 trl==1.13.0 peft requests
    .venv/bin/python docs/peers/ab_real.py --prompts PROMPTS.jsonl --trl-python /tmp/trl_real/venv/bin/python \\
        --out ab_results [--rounds 2] [--variants lora_bf16 full_bf16] [--smoke]

It prints one line per run and, at the end, a markdown table: medians per variant over the rounds, with the step
ratio lit_nash / TRL (the goals: ≤ 0.6 with lit_nash's best generator, ≤ 0.9 with the hf generator) and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trl_bench import busy_cpu_s, loadavg  # noqa: E402  (beside this file)
from trl_bench_real import ENV  # noqa: E402

PEERS = Path(__file__).resolve().parent
VARIANTS = ("lora_bf16", "full_bf16")
GENERATORS = {"hf": [], "vllm": ["generator=vllm", "generator.max_model_len=1024", "generator.kv_cache_gib=0.125"]}


def lit_args(variant: str, generator: str, prompts: str, smoke: bool) -> list[str]:
    steps, tokens = (2, 8) if smoke else (4, 64)
    args = ["task=bench_real", "algo.variant=2", f"data.path={prompts}", "policy.dtype=bfloat16", "bench.threads=1",
            "bench.warmup=1", f"trainer.max_steps={steps}", f"policy.max_new_tokens={tokens}", "bench.dynamics=null"]
    if variant.startswith("full"):
        args += ["policy.lora=null", "policy.optimizer.lr=5e-7"]  # TRL's full fine-tuning rate
    return args + GENERATORS[generator]


def run(cmd: list[str], env: dict, log: Path) -> tuple[int, float, float, str, str]:
    """Run ``cmd``; its return code, wall seconds, mean cores other processes kept busy, load before and after."""
    before, busy0, start = loadavg(), busy_cpu_s(), time.time()
    with open(log, "w") as f:
        proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=f, text=True)
    wall = time.time() - start
    log.with_suffix(".out").write_text(proc.stdout)
    # the run itself keeps one core busy (one torch thread); the rest of the system's busy time is the others'
    others = max(0.0, (busy_cpu_s() - busy0) / wall - 1.0)
    return proc.returncode, wall, others, before, loadavg()


def lit(variant: str, generator: str, a, out: Path, tag: str) -> dict:
    cmd = [sys.executable, "-m", "lit_nash", "bench", *lit_args(variant, generator, a.prompts, a.smoke),
           f"hydra.run.dir={out / 'runs' / tag}"]
    env = {**os.environ, **ENV}
    code, wall, others, before, after = run(cmd, env, out / f"{tag}.log")
    if code != 0:
        return {"error": (out / f"{tag}.log").read_text()[-3000:], "returncode": code}
    r = json.loads((out / f"{tag}.out").read_text().strip().splitlines()[-1])
    return {"step_s": r["median_step_s"], "generate_s": r["split_s"]["generate"], "update_s": r["split_s"]["update"],
            "logprobs_s": r["split_s"]["logprobs"], "peak_rss_mb": r["peak_memory_mb"], "mfu": r.get("mfu"),
            "generation_tokens_per_s": r.get("generation_tokens_per_s"), "wall_s": wall, "other_cores_busy": others,
            "loadavg": [before, after], "bf16": r["bf16"]}


def trl(variant: str, a, out: Path, tag: str) -> dict:
    result = out / f"{tag}.json"
    cmd = [a.trl_python, str(PEERS / "trl_bench_real.py"), "--one", variant, "--out", str(result)] + (["--smoke"] if a.smoke else [])
    env = {**os.environ, **ENV, "TRL_REAL_PROMPTS": a.prompts}
    code, wall, others, before, after = run(cmd, env, out / f"{tag}.log")
    if code != 0:
        return {"error": (out / f"{tag}.log").read_text()[-3000:], "returncode": code}
    r = json.loads(result.read_text())
    return {"step_s": r["median_step_s"], "generate_s": r["median_generate_s"], "peak_rss_mb": r["peak_rss_mb"],
            "generation_tokens_per_s": r["generation_tokens_per_s"], "wall_s": wall, "other_cores_busy": others,
            "loadavg": [before, after]}


def table(rows: list[dict]) -> str:
    """Medians over the rounds per (variant, side); ratios against TRL's median step."""
    lines = ["| variant | side | step (median) | generate | peak RSS | lit/TRL | runs (other cores busy) |",
             "|---|---|---|---|---|---|---|"]
    for variant in sorted({r["variant"] for r in rows}):
        mine = [r for r in rows if r["variant"] == variant and "step_s" in r]
        trl_steps = [r["step_s"] for r in mine if r["side"] == "trl"]
        ref = statistics.median(trl_steps) if trl_steps else None
        for side in sorted({r["side"] for r in mine}, key=lambda s: (s == "trl", s)):
            runs = [r for r in mine if r["side"] == side]
            step = statistics.median(r["step_s"] for r in runs)
            ratio = f"{step / ref:.2f}" if ref else "–"
            lines.append(f"| {variant} | {side} | {step:.2f} s | {statistics.median(r['generate_s'] for r in runs):.2f} s | "
                         f"{statistics.median(r['peak_rss_mb'] for r in runs) / 1024:.2f} GB | {ratio} | "
                         + ", ".join(f"{r['step_s']:.2f} ({r['other_cores_busy']:.2f})" for r in runs) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", required=True, help="the real-model prompt file (JSONL, a 'prompt' per line)")
    ap.add_argument("--trl-python", required=True, help="the throwaway TRL venv's python")
    ap.add_argument("--out", default="ab_results")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    ap.add_argument("--generators", nargs="+", choices=list(GENERATORS), default=list(GENERATORS))
    ap.add_argument("--smoke", action="store_true", help="2 steps of 8 tokens: checks the setup, measures nothing")
    a = ap.parse_args()
    a.prompts = str(Path(a.prompts).resolve())
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if "vllm" in a.generators:  # compile (or load the compiled cache) outside the measured runs
        for variant in a.variants:
            print(json.dumps({"warm-up": variant, **lit(variant, "vllm", a, out, f"warmup_{variant}_vllm")}), flush=True)
    rows = []
    for round_ in range(a.rounds):
        for variant in a.variants:
            sides = [("lit", g) for g in a.generators] + [("trl", None)]
            for side, generator in (sides if round_ % 2 == 0 else sides[::-1]):  # ABBA over the rounds
                tag = f"r{round_}_{variant}_{generator or side}"
                r = lit(variant, generator, a, out, tag) if side == "lit" else trl(variant, a, out, tag)
                r.update(round=round_, variant=variant, side=f"lit_nash {generator}" if side == "lit" else "trl")
                rows.append(r)
                print(json.dumps(r), flush=True)
                (out / "runs.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))
    summary = table(rows)
    (out / "table.md").write_text(summary + "\n")
    print(summary)


if __name__ == "__main__":
    main()
