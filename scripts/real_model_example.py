"""The real-model example, end to end (docs/examples/real_model.md): SmolLM2-135M-Instruct learns what a
MiniLM pairwise classifier prefers, and the classifier was trained on SmolLM2's own samples.

1. sample:  SmolLM2 writes k responses to each prompt of instructions.jsonl (the hf generator, bf16 weights);
            every pair of a prompt's responses is labelled by the stated rule, *the shorter response wins*
            (characters of the decoded text; a tie is ½): pairs.jsonl.
2. judge:   `python -m lit_nash train_preference` fine-tunes all-MiniLM-L6-v2 (a fresh 2-label head) on those
            pairs and saves the classifier that `preference=pairwise` loads.
3. fit:     `python -m lit_nash fit task=text policy=causal_lm_lora algo=<a>` trains SmolLM2 with LoRA against
            that classifier, one run per algorithm, all in one MLflow store.
4. eval:    `python -m lit_nash eval` plays every trained policy against the reference and against each other,
            judged by the same classifier; the win rate against the reference comes with its 95% interval.

    python scripts/prepare_real_models.py real_models
    python scripts/real_model_example.py --models real_models --out real_model_example --algos online_ipo

The models come from scripts/prepare_real_models.py (``--models`` is its output folder), the prompts from the
repository's data/instructions.jsonl. Every step is a plain command a user can run by hand; this script strings
them together, says which step runs and where its log goes, and writes results.json. With ``--jobs 1`` each
command's progress bar shows on the terminal; with more, each fit writes its terminal to
``<out>/fit/<algo>.terminal.log`` and the script prints every minute the last step each fit logged.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one torch thread per process (ENVIRONMENT.md: more is slower on 2 cores)
ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
PROMPTS = Path(__file__).resolve().parents[1] / "data" / "instructions.jsonl"  # 60 everyday instructions
STAGES = 4


# each algorithm's own settings for this example; the rest are its defaults (docs/algorithms/)
ALGO_OVERRIDES = {
    # both responses from the policy (on-policy, the distribution eval samples) and sequence log-prob sums, so
    # that ending earlier (the rule) moves the loss; the default variant 1 samples y, y' at temperature 2
    "online_ipo": ["algo.variant=2", "algo.logprob_reduction=sum"],
}


def rule(a: str, b: str) -> float:
    """The stated preference: the shorter response wins; equal lengths are a tie."""
    return 1.0 if len(a) < len(b) else 0.0 if len(a) > len(b) else 0.5


def sample_pairs(model: Path, prompts: Path, out: Path, k: int, max_new_tokens: int, seed: int) -> dict:
    """Step 1: k responses per prompt from the reference policy, every pair of a prompt labelled by ``rule``."""
    import torch

    from lit_nash.generation import HFGenerator, SamplingGroup
    from lit_nash.policy.causal_lm import CausalLMPolicy

    texts = [json.loads(line)["prompt"] for line in prompts.read_text().splitlines() if line.strip()]
    policy = CausalLMPolicy(str(model), prompts=texts, max_new_tokens=max_new_tokens, dtype="bfloat16")
    generator = HFGenerator(policy)
    rows, start_time = [], time.perf_counter()
    for start in range(0, len(texts), 16):  # 16 prompts per decoding loop
        index = torch.arange(start, min(start + 16, len(texts)))
        (samples,) = generator.generate(index, [SamplingGroup(k=k, seed=seed + start)])
        for i, responses in zip(index.tolist(), samples.responses):
            decoded = policy.decode(responses)  # as the rollout hands text to the judge
            for a, b in itertools.combinations(decoded, 2):
                rows.append({"prompt": texts[i], "a": a, "b": b, "label": rule(a, b)})
        say(f"      {int(index[-1]) + 1}/{len(texts)} prompts sampled ({time.perf_counter() - start_time:.0f} s)")
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    lengths = [len(r["a"]) for r in rows]
    return {"pairs": len(rows), "prompts": len(texts), "k": k, "mean_chars": sum(lengths) / len(lengths),
            "ties": sum(r["label"] == 0.5 for r in rows)}


def say(line: str) -> None:
    print(line, flush=True)


def stage(n: int, what: str, log: Path | None = None) -> None:
    say(f"[{n}/{STAGES}] {what}" + (f"; its log: {log}" if log else ""))


def lit_nash(*args: str, cwd: Path, terminal: Path | None = None) -> None:
    """Run one lit_nash command as a user would: its progress bar and summary line on this terminal, or, with
    ``terminal``, in that file. Stop with its last lines if it fails."""
    command = [sys.executable, "-m", "lit_nash", *args]
    env = {**os.environ, **ENV}
    if terminal is None:
        done = subprocess.run(command, cwd=cwd, env=env)
    else:
        with open(terminal, "w") as f:
            done = subprocess.run(command, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT)
    if done.returncode:
        tail = "".join(terminal.read_text().splitlines(keepends=True)[-20:]) if terminal else ""
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}){': ' + chr(10) + tail if tail else ''}")


def timed(seconds: dict, name: str, *args: str, cwd: Path, terminal: Path | None = None) -> None:
    start = time.perf_counter()
    lit_nash(*args, cwd=cwd, terminal=terminal)
    seconds[name] = time.perf_counter() - start


def last_step(log: Path) -> str:
    """The last "step N/M took ..." line a run wrote to its fit.log (lit_nash.progress), or where it is."""
    lines = [line for line in log.read_text().splitlines() if "lit_nash.progress" in line] if log.is_file() else []
    return lines[-1].split("] - ", 1)[-1] if lines else "starting"


def heartbeat(runs: dict[str, Path], done: threading.Event, every: float = 60) -> None:
    while not done.wait(every):
        say("      " + "; ".join(f"{algo}: {last_step(log)}" for algo, log in runs.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=Path(os.environ.get("LIT_NASH_REAL_MODELS", "real_models")))
    parser.add_argument("--prompts", type=Path, default=PROMPTS)
    parser.add_argument("--out", type=Path, default=Path("real_model_example"))
    parser.add_argument("--algos", default="online_ipo,mpo,nash_md")
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps per algorithm")
    parser.add_argument("--k", type=int, default=4, help="step 1: responses per prompt for the classifier's pairs")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--lr", type=float, default=5e-4, help="LoRA learning rate of the policies")
    parser.add_argument("--eval-samples", type=int, default=4, help="eval: responses per prompt per match")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1, help="fit runs at a time (each uses one torch thread)")
    parser.add_argument("--until", choices=["sample", "judge", "fit", "eval"], default="eval", help="stop after this step")
    args = parser.parse_args()
    out, models = args.out.resolve(), args.models.resolve()
    out.mkdir(parents=True, exist_ok=True)
    policy, encoder = models / "smollm2-135m-instruct", models / "all-minilm-l6-v2"
    store = f"sqlite:///{out}/mlruns.db"
    results: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "seconds": {}}

    say(f"every file goes to {out}; every run to the MLflow store {store}: mlflow ui --backend-store-uri {store}")
    t = time.perf_counter()
    stage(1, f"sample {args.k} responses to each prompt of {args.prompts} from {policy.name}, label every pair")
    results["pairs"] = sample_pairs(policy, args.prompts.resolve(), out / "pairs.jsonl", args.k, args.max_new_tokens, args.seed)
    results["seconds"]["sample"] = time.perf_counter() - t
    say(f"      {results['pairs']['pairs']} pairs in {out / 'pairs.jsonl'} ({results['seconds']['sample']:.0f} s)")
    if args.until == "sample":
        return print(json.dumps(results))

    t = time.perf_counter()
    judge = out / "judge"
    stage(2, f"train the judge ({encoder.name}) on the pairs: python -m lit_nash train_preference",
          out / "train_preference" / "train_preference.log")
    lit_nash("train_preference", f"data.path={out / 'pairs.jsonl'}", f"model_path={encoder}", f"save_dir={judge}",
             f"logger.tracking_uri={store}", f"seed={args.seed}", "train.lr=1e-4", "trainer.max_epochs=4",
             f"hydra.run.dir={out / 'train_preference'}", cwd=out)
    results["seconds"]["train_preference"] = time.perf_counter() - t
    results["judge"] = judge_metrics(out / "mlruns.db")
    say(f"      held-out accuracy {results['judge'].get('eval/accuracy', float('nan')):.3f}, the classifier in {judge} "
        f"({results['seconds']['train_preference']:.0f} s)")
    if args.until == "judge":
        return print(json.dumps(results))

    common = ["task=text", "policy=causal_lm_lora", f"data.path={args.prompts.resolve()}", f"policy.model_path={policy}",
              f"preference.path={judge}", "policy.dtype=bfloat16", f"policy.max_new_tokens={args.max_new_tokens}",
              f"policy.optimizer.lr={args.lr}", f"trainer.max_steps={args.steps}", "trainer.log_every_n_steps=5",
              f"logger.tracking_uri={store}", f"seed={args.seed}"]

    algos = args.algos.split(",")
    logs = {algo: out / "fit" / algo / "fit.log" for algo in algos}
    stage(3, f"train {', '.join(algos)} with LoRA against the judge, {args.steps} steps each: python -m lit_nash fit "
          f"({min(args.jobs, len(algos))} at a time)")
    for algo in algos:
        say(f"      {algo}: its log {logs[algo]}" + (f", its terminal {out / 'fit' / f'{algo}.terminal.log'}"
                                                        if args.jobs > 1 else ""))

    def fit(algo: str) -> None:
        (out / "fit").mkdir(exist_ok=True)
        timed(results["seconds"], f"fit_{algo}", "fit", f"algo={algo}", *ALGO_OVERRIDES.get(algo, []), *common,
              f"hydra.run.dir={out / 'fit' / algo}", cwd=out,
              terminal=out / "fit" / f"{algo}.terminal.log" if args.jobs > 1 else None)
        say(f"      {algo}: done in {results['seconds'][f'fit_{algo}']:.0f} s")

    done = threading.Event()
    if args.jobs > 1:  # the bars of parallel runs would overwrite each other: their steps, from their logs
        threading.Thread(target=heartbeat, args=(logs, done), daemon=True).start()
    try:
        with ThreadPoolExecutor(args.jobs) as pool:  # one torch thread each: --jobs 2 fills a 2-core machine
            list(pool.map(fit, algos))
    finally:
        done.set()
    if args.until == "fit":
        return print(json.dumps(results))

    t = time.perf_counter()
    stage(4, f"evaluate every run against the reference and each other: python -m lit_nash eval, into {out / 'eval'}")
    lit_nash("eval", "experiment=lit_nash", f"tracking_uri={store}", f"samples={args.eval_samples}", f"seed={args.seed}",
             f"out={out / 'eval'}", cwd=out)
    results["seconds"]["eval"] = time.perf_counter() - t
    results["eval"] = json.loads((out / "eval" / "win_rate_matrix.json").read_text())
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    say(f"every figure of this run: {out / 'results.json'}")
    print(json.dumps({"seconds": results["seconds"], "judge": results["judge"], "pairs": results["pairs"]}))


def judge_metrics(db: Path) -> dict:
    """The classifier's held-out eval metrics, read back from the MLflow store."""
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{db}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "lit_nash_preference"]
    (run,) = client.search_runs([experiment.experiment_id], max_results=1)
    return {k: v for k, v in run.data.metrics.items() if k.startswith("eval/")}


if __name__ == "__main__":
    main()
