"""Peers, measured side by side (docs/performance.md); TRL is never a lit_nash dependency: this runs in a throwaway
venv (python -m venv /tmp/trl_real/venv; pip install torch==2.13.0 && pip install torch==2.13.0 trl==1.13.0 peft
requests; the torch pin keeps pip on the CPU build).

Time TRL 1.13.0's experimental Online DPO trainer on lit_nash's real-model bench spec (conf/task/bench_real.yaml,
`python -m lit_nash bench task=bench_real bench.threads=1 bench.warmup=1 trainer.max_steps=4`):
SmolLM2-135M-Instruct as the policy, the 60 instructions of data/instructions.jsonl as one-turn
conversations (the policy's chat template with the generation prompt), 8 prompts per step, 2 samples per prompt
(Online DPO's own pair), 64 new tokens, temperature 1, no top-k / top-p, and all-MiniLM-L6-v2 with a fresh
1-label head as the reward model (its scores are meaningless; only its cost matters). Four variants:
{lora, full} x {fp32, bf16}: LoRA r=16, alpha=32 on every linear layer (lr 5e-5) or full fine-tuning (lr 5e-7,
TRL's copy of the policy as the reference); fp32 weights, or bf16 policy weights (no autocast; reward model fp32).

Usage (with the throwaway venv):
    cp docs/peers/trl_bench.py docs/peers/trl_bench_real.py /tmp/trl_real/ && /tmp/trl_real/venv/bin/python /tmp/trl_real/trl_bench_real.py
        # the 4 variants one after another, each its own process -> /work/notes/trl_real/run_<variant>.json
    /tmp/trl_real/venv/bin/python /tmp/trl_real/trl_bench_real.py --variants lora_fp32 --smoke   # 2 steps, 8 tokens
    /tmp/trl_real/venv/bin/python /tmp/trl_real/trl_bench_real.py --one lora_fp32 --out x.json   # a single run, in-process

Each run: 1 torch thread, CPU, 4 steps; the reported figure is the median wall time of steps 2..4 (on_step_begin ->
on_step_end of transformers' Trainer, i.e. generation, reward, policy and reference log-prob passes, backward and
the optimizer step), plus the median time inside `trainer._generate`, the generated tokens per step (EOS included,
16 sequences), generation tokens/s and the process's peak RSS.

The reward model's tokenizer has no chat template, and Online DPO renders conversational prompt + completion through
the reward tokenizer's chat template; this script gives it a minimal one (`[CLS] prompt [SEP] completion [SEP]`,
what BERT's tokenizer would add to a plain pair). lit_nash's pairwise judge instead reads both orders of each pair
(16 texts `prompt [SEP] a [SEP] b`) per step; TRL scores the 16 completions one by one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from trl_bench import busy_cpu_s, loadavg, config_kwargs as tiny_spec_config  # the tiny spec's script, beside this one (copy both)

ROOT = Path(os.environ.get("TRL_REAL_DIR", "/tmp/trl_real"))  # the throwaway venv and TRL's output_dir
MODELS = Path(os.environ.get("LIT_NASH_REAL_MODELS", "/work/real_models"))
POLICY = MODELS / "smollm2-135m-instruct"
JUDGE = MODELS / "all-minilm-l6-v2"
PROMPTS = Path(os.environ.get("TRL_REAL_PROMPTS", Path(__file__).resolve().parents[2] / "data" / "instructions.jsonl"))
RESULTS = Path(os.environ.get("TRL_REAL_RESULTS", "/work/notes/trl_real"))
THREADS = 1
STEPS = 4
WARMUP = 1  # median over steps 2..4
MAX_NEW_TOKENS = 64
VARIANTS = ("lora_fp32", "lora_bf16", "full_fp32", "full_bf16")
ENV = {"TRL_EXPERIMENTAL_SILENCE": "1", "OMP_NUM_THREADS": str(THREADS), "MKL_NUM_THREADS": str(THREADS), "HF_HUB_OFFLINE": "1",
       "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
       "WANDB_DISABLED": "true", "CUDA_VISIBLE_DEVICES": ""}
# Online DPO renders `prompt + completion` messages through the reward tokenizer's chat template (then tokenizes
# with add_special_tokens=False); MiniLM's BERT tokenizer has none, so give it BERT's own pair layout.
REWARD_CHAT_TEMPLATE = "[CLS] {% for m in messages %}{{ m['content'] }} [SEP]{% if not loop.last %} {% endif %}{% endfor %}"


def config_kwargs(variant: str, steps: int, max_new_tokens: int) -> dict:
    """The tiny spec's Online DPO settings (trl_bench.py: fp32 weights, no gradient checkpointing, no vLLM, CPU, no
    logging inside the timed steps), with this spec's steps, tokens, learning rate and filters."""
    kw = tiny_spec_config("online_dpo")
    kw.update(output_dir=str(ROOT / "out" / variant), max_steps=steps, max_new_tokens=max_new_tokens,
              learning_rate=5e-5 if variant.startswith("lora") else 5e-7, top_k=0, top_p=1.0)
    return kw  # everything else (beta=0.1, loss_type=sigmoid, max_length=512, AdamW, linear schedule) TRL's defaults


def run_one(variant: str, steps: int, max_new_tokens: int) -> dict:
    import resource
    import statistics

    import torch

    torch.set_num_threads(THREADS)
    import accelerate
    import datasets
    import peft
    import transformers
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback
    from trl.experimental.online_dpo import OnlineDPOConfig as Config, OnlineDPOTrainer as Trainer

    if variant not in VARIANTS:
        raise SystemExit(f"unknown variant {variant}")
    lora = variant.startswith("lora")
    policy_dtype = torch.bfloat16 if variant.endswith("bf16") else torch.float32

    tok = AutoTokenizer.from_pretrained(str(POLICY))
    policy = AutoModelForCausalLM.from_pretrained(str(POLICY), dtype=policy_dtype)
    reward = AutoModelForSequenceClassification.from_pretrained(str(JUDGE), num_labels=1, dtype=torch.float32)
    reward_tok = AutoTokenizer.from_pretrained(str(JUDGE))
    if not getattr(reward_tok, "chat_template", None):
        reward_tok.chat_template = REWARD_CHAT_TEMPLATE
    # one-turn conversations: Online DPO applies the policy's chat template with the generation prompt
    rows = [json.loads(line) for line in PROMPTS.read_text().splitlines() if line.strip()]
    ds = Dataset.from_list([{"prompt": [{"role": "user", "content": r["prompt"]}]} for r in rows])

    peft_config = None
    if lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")

    cfg_kw = config_kwargs(variant, steps, max_new_tokens)
    args = Config(**cfg_kw)

    timings = {"steps": [], "cpu": [], "other": [], "gen": [], "reward": [], "resp_tokens": [], "gen_positions": [],
               "prompt_tokens": []}
    state = {"open": None}

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, st, control, **kw):
            state["open"] = {"t0": time.perf_counter(), "c0": time.process_time(), "b0": busy_cpu_s(), "gen": 0.0,
                             "reward": 0.0, "tok": 0, "pos": 0, "ptok": 0}

        def on_step_end(self, args, st, control, **kw):
            o = state["open"]
            timings["steps"].append(time.perf_counter() - o["t0"])
            own = time.process_time() - o["c0"]
            timings["cpu"].append(own)
            # CPU seconds other processes used during this step (system busy minus this process), per second
            timings["other"].append(max(0.0, busy_cpu_s() - o["b0"] - own) / timings["steps"][-1])
            for k in ("gen", "reward"):
                timings[k].append(o[k])
            timings["resp_tokens"].append(o["tok"])
            timings["gen_positions"].append(o["pos"])
            timings["prompt_tokens"].append(o["ptok"])
            state["open"] = None

    def timed(fn, key, count=None):
        def wrapped(*a, **k):
            t = time.perf_counter()
            out = fn(*a, **k)
            if state["open"] is not None:
                state["open"][key] += time.perf_counter() - t
                if count is not None:
                    count(out)
            return out
        return wrapped

    def count_gen(out):
        # _generate returns (prompt_ids, prompt_mask, completion_ids, completion_mask): 2 samples x 8 prompts;
        # the mask keeps each completion up to and including its first EOS
        o = state["open"]
        o["tok"] += int(out[3].sum())
        o["pos"] += int(out[2].numel())       # decode positions run: 16 rows x the longest completion
        o["ptok"] += int(out[1].sum())

    kw = dict(model=policy, ref_model=None, reward_funcs=reward, args=args, train_dataset=ds,
              processing_class=tok, reward_processing_classes=reward_tok, peft_config=peft_config,
              callbacks=[StepTimer()])
    t_init = time.perf_counter()
    trainer = Trainer(**kw)
    init_s = time.perf_counter() - t_init

    trainer._generate = timed(trainer._generate, "gen", count=count_gen)
    trainer._calculate_rewards_from_functions = timed(trainer._calculate_rewards_from_functions, "reward")

    t_train = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - t_train

    warm = min(WARMUP, len(timings["steps"]) - 1)
    kept = slice(warm, None)
    steps_kept = timings["steps"][kept]
    med = statistics.median(steps_kept)
    gen_med = statistics.median(timings["gen"][kept])
    tok_mean = statistics.fmean(timings["resp_tokens"][kept])
    model = trainer.model
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    param_dtypes = sorted({str(p.dtype) for p in model.parameters()})
    train_dtypes = sorted({str(p.dtype) for p in model.parameters() if p.requires_grad})
    out = {
        "variant": variant,
        "trainer_class": f"{Trainer.__module__}.{Trainer.__name__}",
        "steps_run": len(timings["steps"]),
        "measured_steps": len(steps_kept),
        "median_step_s": med,
        "mean_step_s": statistics.fmean(steps_kept),
        "median_step_cpu_s": statistics.median(timings["cpu"][kept]),
        # mean number of cores other processes kept busy during the measured steps (0 = quiet, 1 = the other core)
        "other_procs_cores_busy_mean": statistics.fmean(timings["other"][kept]),
        "min_step_s": min(steps_kept), "max_step_s": max(steps_kept),
        "median_generate_s": gen_med,
        "generate_share_of_time": sum(timings["gen"][kept]) / sum(steps_kept),
        "median_reward_s": statistics.median(timings["reward"][kept]),
        "mean_generated_tokens_per_step": tok_mean,
        "generation_tokens_per_s": sum(timings["resp_tokens"][kept]) / sum(timings["gen"][kept]),
        "mean_decode_positions_per_step": statistics.fmean(timings["gen_positions"][kept]),
        "mean_prompt_tokens_per_step": statistics.fmean(timings["prompt_tokens"][kept]),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "trainer_init_s": init_s, "train_call_s": train_s,
        "per_step_s": timings["steps"], "per_step_cpu_s": timings["cpu"], "per_step_other_cores_busy": timings["other"],
        "per_step_generate_s": timings["gen"], "per_step_reward_s": timings["reward"],
        "per_step_generated_tokens": timings["resp_tokens"], "per_step_decode_positions": timings["gen_positions"],
        "trainable_params": n_train, "param_dtypes": param_dtypes, "trainable_param_dtypes": train_dtypes,
        "peft": lora, "policy_dtype": str(policy_dtype), "reference": "adapter disabled" if lora else "copy of the policy",
        "reward_chat_template": reward_tok.chat_template,
        "threads": torch.get_num_threads(),
        "device": str(trainer.accelerator.device),
        "config": {k: (v if isinstance(v, (int, float, str, bool, type(None))) else str(v))
                   for k, v in args.to_dict().items()
                   if k in set(cfg_kw) | {"beta", "loss_type", "max_length", "missing_eos_penalty", "optim",
                                          "lr_scheduler_type", "warmup_steps", "weight_decay", "adam_beta1",
                                          "adam_beta2", "max_grad_norm", "disable_dropout", "min_p",
                                          "repetition_penalty", "torch_empty_cache_steps"}},
        "generation_config": trainer.generation_config.to_diff_dict(),
        "versions": {"trl": trl.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
                     "torch": torch.__version__, "accelerate": accelerate.__version__,
                     "datasets": datasets.__version__, "python": sys.version.split()[0]},
    }
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--one", choices=VARIANTS, help="run this variant in-process")
    ap.add_argument("--out", help="with --one: the JSON to write")
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS), help="driver: these, in order")
    ap.add_argument("--smoke", action="store_true", help="2 steps, 8 new tokens (checks the setup, not a measurement)")
    ap.add_argument("--results", default=str(RESULTS), help="driver: folder of run_<variant>.json")
    a = ap.parse_args()
    steps, new = (2, 8) if a.smoke else (STEPS, MAX_NEW_TOKENS)
    if a.one:
        res = run_one(a.one, steps, new)
        res["smoke"] = a.smoke
        Path(a.out).write_text(json.dumps(res, indent=1))
        print(json.dumps({k: res[k] for k in ("variant", "median_step_s", "median_generate_s",
                                              "mean_generated_tokens_per_step", "peak_rss_mb")}))
        return
    results = Path(a.results)
    results.mkdir(parents=True, exist_ok=True)
    tag = "smoke_" if a.smoke else ""
    for name in a.variants:
        out = results / f"{tag}run_{name}.json"
        log_path = results / f"{tag}run_{name}.log"
        before = loadavg()
        env = {**os.environ, **ENV}
        cmd = [sys.executable, __file__, "--one", name, "--out", str(out)] + (["--smoke"] if a.smoke else [])
        samples = []
        t0 = time.time()
        with open(log_path, "w") as log:
            p = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
            while p.poll() is None:  # the 1-minute load average every 5 s while the run is going
                samples.append(float(loadavg().split()[0]))
                time.sleep(5)
        wall = time.time() - t0
        after = loadavg()
        if p.returncode != 0:
            err = log_path.read_text()[-4000:]
            out.write_text(json.dumps({"variant": name, "error": err, "returncode": p.returncode,
                                       "loadavg_before": before, "loadavg_after": after}, indent=1))
            print(name, "FAILED", err, file=sys.stderr, flush=True)
            continue
        r = json.loads(out.read_text())
        r.update(loadavg_before=before, loadavg_after=after, loadavg1_samples_during=samples, process_wall_s=wall)
        out.write_text(json.dumps(r, indent=1))
        print(f"{name} median_step={r['median_step_s']:.2f}s gen={r['median_generate_s']:.2f}s "
              f"tok/step={r['mean_generated_tokens_per_step']:.0f} gen_tok/s={r['generation_tokens_per_s']:.1f} "
              f"rss={r['peak_rss_mb']:.0f}MB load_before={before}", flush=True)


if __name__ == "__main__":
    main()
