"""Peers, measured side by side (docs/performance.md); TRL is never a lit_nash dependency: this runs in a throwaway
venv (python -m venv /tmp/trl_bench/venv; pip install torch==2.13.0 trl==1.13.0 requests).

Time TRL 1.13.0's experimental Online DPO and Nash-MD trainers on lit_nash's shared CPU bench spec.

Usage (with the throwaway venv):
    cp docs/peers/trl_bench.py /tmp/trl_bench/ && /tmp/trl_bench/venv/bin/python /tmp/trl_bench/trl_bench.py   # both trainers, 2 runs each -> results.json
    /tmp/trl_bench/venv/bin/python /tmp/trl_bench/trl_bench.py --one online_dpo --out x.json   # a single run

Spec files come from lit_nash's builder (the files of the shared spec):
    cd /tmp/trl_bench && OMP_NUM_THREADS=1 /work/main/.venv/bin/python -m lit_nash bench trainer.max_steps=3 \
        bench.warmup=0 bench.dynamics=null hydra.run.dir=/tmp/trl_bench/spec

Each run is its own process (fresh peak RSS), 2 torch threads, fp32, CPU, 20 steps; the reported figure is the
median wall time of steps 3..20 (on_step_begin -> on_step_end of transformers' Trainer, i.e. generation, reward,
log-prob passes, backward and the optimizer step).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(os.environ.get("TRL_BENCH_DIR", "/tmp/trl_bench"))  # the throwaway venv, spec files and results
SPEC = ROOT / "spec" / "bench_spec"
THREADS = 2
STEPS = 20
WARMUP = 2  # median over steps 3..20
ENV = {"TRL_EXPERIMENTAL_SILENCE": "1", "OMP_NUM_THREADS": str(THREADS), "MKL_NUM_THREADS": str(THREADS), "HF_HUB_OFFLINE": "1",
       "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
       "WANDB_DISABLED": "true", "CUDA_VISIBLE_DEVICES": ""}


def config_kwargs(trainer: str) -> dict:
    kw = dict(
        output_dir=str(ROOT / "out" / trainer),
        per_device_train_batch_size=8,
        gradient_accumulation_steps=1,
        max_steps=STEPS,
        learning_rate=1e-5,
        max_new_tokens=32,
        temperature=1.0,
        bf16=False, fp16=False,            # TRL's config defaults bf16=True
        gradient_checkpointing=False,      # TRL's config defaults gradient_checkpointing=True
        use_vllm=False,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        logging_steps=1000,                # no metric logging inside the timed steps (as lit_nash's bench)
        disable_tqdm=True,
        seed=0,
        dataloader_num_workers=0,
    )
    return kw  # everything else (beta=0.1, loss_type=sigmoid, top_k=0, top_p=1, max_length=512, mixture_coef=0.5) TRL's defaults


def run_one(trainer_name: str) -> dict:
    import resource
    import statistics

    import torch

    torch.set_num_threads(THREADS)
    import transformers
    import trl
    import accelerate
    import datasets
    from datasets import Dataset
    from transformers import (AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer,
                              TrainerCallback)

    if trainer_name == "online_dpo":
        from trl.experimental.online_dpo import OnlineDPOConfig as Config, OnlineDPOTrainer as Trainer
    elif trainer_name == "nash_md":
        from trl.experimental.nash_md import NashMDConfig as Config, NashMDTrainer as Trainer
        from trl.experimental.nash_md import nash_md_trainer as nmd_mod
    else:
        raise SystemExit(f"unknown trainer {trainer_name}")

    tok = AutoTokenizer.from_pretrained(str(SPEC / "policy"))
    policy = AutoModelForCausalLM.from_pretrained(str(SPEC / "policy"), dtype=torch.float32)
    reward = AutoModelForSequenceClassification.from_pretrained(str(SPEC / "reward"), num_labels=1, dtype=torch.float32)
    reward_tok = AutoTokenizer.from_pretrained(str(SPEC / "reward"))
    # Prompts as lit_nash feeds them: [BOS] + 16 words (17 tokens). Online DPO tokenizes with
    # add_special_tokens=False, so the BOS is written into the text (the added special token is matched as such;
    # Nash-MD's tokenize_row then sees it is already there). The trailing space keeps Online DPO's reward text
    # `prompt + completion` (plain string concatenation) from gluing the last prompt word to the first response word.
    rows = [json.loads(line) for line in (SPEC / "prompts.jsonl").read_text().splitlines()]
    ds = Dataset.from_list([{"prompt": f"{tok.bos_token} {r['prompt']} "} for r in rows])

    cfg_kw = config_kwargs(trainer_name)
    args = Config(**cfg_kw)

    timings = {"steps": [], "cpu": [], "other": [], "gen": [], "gen_mixture": [], "reward": [], "resp_tokens": []}
    state = {"open": None}

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, st, control, **kw):
            state["open"] = {"t0": time.perf_counter(), "c0": time.process_time(), "b0": busy_cpu_s(), "gen": 0.0, "gen_mixture": 0.0, "reward": 0.0, "tok": 0}

        def on_step_end(self, args, st, control, **kw):
            o = state["open"]
            timings["steps"].append(time.perf_counter() - o["t0"])
            own = time.process_time() - o["c0"]
            timings["cpu"].append(own)
            # CPU seconds other processes used during this step (system busy minus this process), per second
            timings["other"].append(max(0.0, busy_cpu_s() - o["b0"] - own) / timings["steps"][-1])
            for k in ("gen", "gen_mixture", "reward"):
                timings[k].append(o[k])
            timings["resp_tokens"].append(o["tok"])
            state["open"] = None

    def timed(fn, key, count=None):
        def wrapped(*a, **k):
            t = time.perf_counter()
            out = fn(*a, **k)
            if state["open"] is not None:
                state["open"][key] += time.perf_counter() - t
                if count is not None:
                    state["open"]["tok"] += count(out, *a, **k)
            return out
        return wrapped

    kw = dict(model=policy, ref_model=None, reward_funcs=reward, args=args, train_dataset=ds,
              processing_class=tok, callbacks=[StepTimer()])
    if trainer_name == "online_dpo":
        kw["reward_processing_classes"] = reward_tok
    t_init = time.perf_counter()
    trainer = Trainer(**kw)
    init_s = time.perf_counter() - t_init

    if trainer_name == "online_dpo":
        # _generate returns (prompt_ids, prompt_mask, completion_ids, completion_mask): 2 samples x 8 prompts
        trainer._generate = timed(trainer._generate, "gen", count=lambda out, *a, **k: int(out[3].sum()))
        trainer._calculate_rewards_from_functions = timed(trainer._calculate_rewards_from_functions, "reward")
    else:
        from trl.experimental.utils import truncate_right

        def count(out, model, prompts):
            ctx = prompts["input_ids"].shape[1]
            n = 0
            for o in out:
                _, m = truncate_right(o[:, ctx:], tok.eos_token_id, tok.pad_token_id)
                n += int(m.sum())
            return n

        # policy sample + geometric-mixture sample (the mixture one is also timed on its own)
        trainer._generate_completions = timed(trainer._generate_completions, "gen", count=count)
        trainer._compute_rewards = timed(trainer._compute_rewards, "reward")
        mix_gen = nmd_mod.GeometricMixtureWrapper.generate
        nmd_mod.GeometricMixtureWrapper.generate = timed(mix_gen, "gen_mixture")

    t_train = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - t_train

    kept = slice(WARMUP, None)
    steps = timings["steps"][kept]
    med = statistics.median(steps)
    gen_med = statistics.median(timings["gen"][kept])
    share = sum(timings["gen"][kept]) / sum(steps)
    out = {
        "trainer": trainer_name,
        "trainer_class": f"{Trainer.__module__}.{Trainer.__name__}",
        "steps_run": len(timings["steps"]),
        "measured_steps": len(steps),
        "median_step_s": med,
        "mean_step_s": statistics.fmean(steps),
        # process CPU seconds (all threads) per step: less sensitive to other processes than wall time
        "median_step_cpu_s": statistics.median(timings["cpu"][kept]),
        # mean number of cores other processes kept busy during steps 3..20 (0 = machine quiet, 2 = both cores)
        "other_procs_cores_busy_mean": statistics.fmean(timings["other"][kept]),
        "quiet_steps": sum(o < 0.1 for o in timings["other"][kept]),
        "median_step_s_quiet_steps_only": (statistics.median([t for t, o in zip(steps, timings["other"][kept]) if o < 0.1])
                                           if any(o < 0.1 for o in timings["other"][kept]) else None),
        "min_step_s": min(steps), "max_step_s": max(steps),
        "median_generate_s": gen_med,
        "generate_share_of_time": share,  # sum(gen) / sum(step) over steps 3..20
        "median_reward_s": statistics.median(timings["reward"][kept]),
        "median_mixture_generate_s": statistics.median(timings["gen_mixture"][kept]) if trainer_name == "nash_md" else None,
        "mean_response_tokens_per_step": statistics.fmean(timings["resp_tokens"][kept]),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "trainer_init_s": init_s, "train_call_s": train_s,
        "per_step_s": timings["steps"], "per_step_cpu_s": timings["cpu"], "per_step_other_cores_busy": timings["other"], "per_step_generate_s": timings["gen"],
        "per_step_reward_s": timings["reward"], "per_step_mixture_generate_s": timings["gen_mixture"],
        "threads": torch.get_num_threads(),
        "device": str(trainer.accelerator.device),
        "config": {k: (v if isinstance(v, (int, float, str, bool, type(None))) else str(v))
                   for k, v in args.to_dict().items()
                   if k in set(cfg_kw) | {"beta", "loss_type", "top_k", "top_p", "max_length", "mixture_coef",
                                          "missing_eos_penalty", "optim", "lr_scheduler_type", "warmup_steps",
                                          "weight_decay", "adam_beta1", "adam_beta2", "max_grad_norm",
                                          "disable_dropout", "torch_empty_cache_steps"}},
        "versions": {"trl": trl.__version__, "transformers": transformers.__version__, "torch": torch.__version__,
                     "accelerate": accelerate.__version__, "datasets": datasets.__version__,
                     "python": sys.version.split()[0]},
    }
    return out


def busy_cpu_s() -> float:
    """System-wide busy CPU seconds so far (all cores, /proc/stat: everything but idle and iowait)."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(f) - f[3] - f[4]) / os.sysconf("SC_CLK_TCK")


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().strip()


def wait_quiet(max_busy: float = 0.05, window: float = 15.0, max_wait: float = 600.0) -> float:
    """Wait (at most max_wait s) until other processes used < max_busy cores over a window of `window` s."""
    t = time.time()
    while time.time() - t < max_wait:
        b0 = busy_cpu_s()
        time.sleep(window)
        if (busy_cpu_s() - b0) / window < max_busy:
            break
    return time.time() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--one", choices=["online_dpo", "nash_md"])
    ap.add_argument("--out")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--only", choices=["online_dpo", "nash_md"], help="driver: run just this trainer")
    ap.add_argument("--append", action="store_true", help="driver: add runs to the existing results.json")
    ap.add_argument("--first-repeat", type=int, default=1)
    a = ap.parse_args()
    if a.one:
        res = run_one(a.one)
        Path(a.out).write_text(json.dumps(res, indent=1))
        print(json.dumps({k: res[k] for k in ("trainer", "median_step_s", "generate_share_of_time", "peak_rss_mb")}))
        return
    results = {"spec": str(SPEC), "runs": []}
    if a.append:
        results = json.loads((ROOT / "results.json").read_text())
    for rep in range(a.first_repeat - 1, a.first_repeat - 1 + a.repeats):
        for name in ((a.only,) if a.only else ("online_dpo", "nash_md")):
            out = ROOT / f"run_{name}_{rep + 1}.json"
            waited = wait_quiet()
            before = loadavg()
            env = {**os.environ, **ENV}
            samples = []
            with open(ROOT / f"run_{name}_{rep + 1}.log", "w") as log:
                p = subprocess.Popen([sys.executable, __file__, "--one", name, "--out", str(out)], env=env,
                                     stdout=log, stderr=subprocess.STDOUT, text=True)
                while p.poll() is None:  # the 1-minute load average every 5 s while the run is going
                    samples.append(float(loadavg().split()[0]))
                    time.sleep(5)
            p.stderr = (ROOT / f"run_{name}_{rep + 1}.log").read_text()
            after = loadavg()
            if p.returncode != 0:
                results["runs"].append({"trainer": name, "repeat": rep + 1, "error": p.stderr[-4000:],
                                        "loadavg_before": before, "loadavg_after": after,
                                        "loadavg1_samples_during": samples})
                print(p.stderr[-4000:], file=sys.stderr)
                continue
            r = json.loads(out.read_text())
            r.update(repeat=rep + 1, waited_for_quiet_s=waited, loadavg_before=before, loadavg_after=after, loadavg1_samples_during=samples)
            results["runs"].append(r)
            print(name, rep + 1, f"median={r['median_step_s']:.3f}s gen_share={r['generate_share_of_time']:.2f} "
                  f"rss={r['peak_rss_mb']:.0f}MB load_before={before}", flush=True)
            (ROOT / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
