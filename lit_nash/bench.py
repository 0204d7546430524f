"""``python -m lit_nash bench [overrides]``: time a fixed number of online steps and print one JSON line.

The run is ``fit``'s: the same config (``conf/bench.yaml`` is ``conf/fit.yaml`` with ``task=bench``, the
shared CPU spec of ``conf/task/bench.yaml``), the same parts, the same Trainer loop, minus MLflow and
checkpoints. What a benchmark adds is measurement:

* the wall time of every step, and its median over the steps after ``bench.warmup``;
* the split of a step into generation (``policy.sample_groups``, which ``sample`` calls), preference calls (``preference.prob``),
  no-grad log-prob passes (``policy.response_log_probs`` outside the update) and the update
  (``policy.optimize``: the loss forward with grad, backward and the optimizer step), each as a median
  over the same steps; what is left is ``other`` (labels bookkeeping, pair selection, the schedule);
* prompts/s and generated tokens/s (tokens up to and including EOS), peak memory (the process's peak RSS
  on CPU, peak allocated on CUDA), and the versions of everything that changes the figures;
* optionally (``bench.dynamics``), the throughput of the closed-form matrix-game dynamics.

Timers wrap the four entry points of this run's policy and preference objects (instance attributes, so
nothing else is touched); on CUDA each timer synchronizes so that the time is the GPU's too.
"""

from __future__ import annotations

import json
import platform
import resource
import statistics
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from omegaconf import DictConfig, open_dict

PARTS = ("generate", "preference", "logprobs", "update")


@hydra.main(version_base="1.3", config_path="pkg://lit_nash.conf", config_name="bench")
def main(cfg: DictConfig) -> None:
    print(json.dumps(bench(cfg)))


def bench(cfg: DictConfig) -> dict[str, Any]:
    import torch
    from hydra.utils import instantiate

    from lit_nash.fit import build_game_and_data, build_policy, build_preference, build_tiny_model
    from lit_nash.rng import RNGCheckpoint

    spec = cfg.bench
    if spec.threads:
        torch.set_num_threads(int(spec.threads))
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    build_spec_files(cfg)
    game, data = build_game_and_data(cfg)
    build_tiny_model(cfg, game)
    preference = build_preference(cfg.preference, game)
    algorithm = instantiate(cfg.algo)
    policy = build_policy(cfg, game, data, algorithm, preference)
    timer = StepTimer(policy, preference)
    quiet = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False, "enable_model_summary": False}
    trainer = instantiate(cfg.trainer, **quiet, callbacks=[algorithm, RNGCheckpoint(cfg.seed), timer])
    trainer.fit(policy, datamodule=data)
    if len(timer.steps) <= spec.warmup:
        raise SystemExit(f"lit_nash bench: {len(timer.steps)} steps ran, not more than bench.warmup={spec.warmup}")
    kept = timer.steps[spec.warmup:]
    median = statistics.median(s["total"] for s in kept)
    split = {part: statistics.median(s[part] for s in kept) for part in (*PARTS, "other")}
    seconds = sum(s["total"] for s in kept)
    result = {
        "algo": algorithm.name,
        "device": str(policy.device),
        "steps": len(timer.steps),
        "measured_steps": len(kept),
        "median_step_s": median,
        "split_s": split,
        "prompts_per_s": sum(s["prompts"] for s in kept) / seconds,
        "generated_tokens_per_s": sum(s["tokens"] for s in kept) / seconds,
        "peak_memory_mb": peak_memory_mb(policy.device),
        "memory": "cuda_max_allocated" if policy.device.type == "cuda" else "max_rss",
        "threads": torch.get_num_threads(),
        "config": {"prompts_per_step": cfg.rollout.prompts_per_step, "max_new_tokens": cfg.policy.max_new_tokens,
                   "k": cfg.algo.get("k"), "dtype": cfg.policy.dtype, "lr": cfg.policy.lr,
                   "lora": cfg.policy.lora is not None},
        "versions": versions(),
    }
    if spec.dynamics:
        result["dynamics"] = dynamics_throughput(**spec.dynamics)
    return result


# -- the shared spec's files: a tiny GPT-2 policy, a reward model and a prompt file, built offline -------
def build_spec_files(cfg: DictConfig) -> None:
    """Write the spec's model directories and prompts into the run folder where the config leaves them null."""
    import random

    from lit_nash.models import tiny_causal_lm, tiny_sequence_classifier

    spec = cfg.bench.spec
    root = Path(cfg.output_dir) / "bench_spec"
    words = [f"w{i}" for i in range(spec.vocab_words)]
    with open_dict(cfg):
        if cfg.policy.get("model_path") is None and cfg.get("game") is None:
            cfg.policy.model_path = str(tiny_causal_lm(
                root / "policy", words, n_layer=spec.n_layer, n_embd=spec.n_embd, n_head=spec.n_head,
                max_positions=spec.max_positions, seed=cfg.seed))
        if "path" in cfg.preference and cfg.preference.path is None:
            cfg.preference.path = str(tiny_sequence_classifier(
                root / "reward", words, num_labels=1, n_layer=spec.n_layer, n_embd=spec.n_embd,
                n_head=spec.n_head, max_positions=spec.max_positions, seed=cfg.seed + 1))
        if "path" in cfg.data and cfg.data.path is None:
            rng = random.Random(cfg.seed)
            prompts = root / "prompts.jsonl"
            prompts.parent.mkdir(parents=True, exist_ok=True)
            prompts.write_text("".join(
                json.dumps({"prompt": " ".join(rng.choice(words) for _ in range(spec.prompt_words))}) + "\n"
                for _ in range(spec.prompts)))
            cfg.data.path = str(prompts)


# -- timing ----------------------------------------------------------------------------------------------
class StepTimer(L.Callback):
    """Per-step wall time and its split into the parts of an online step."""

    def __init__(self, policy, preference):
        self.steps: list[dict[str, float]] = []
        self._open: dict[str, float] | None = None
        self._stack: list[str] = []
        self._cuda = False
        policy.sample_groups = self._timed(policy.sample_groups, "generate", count_tokens=policy)
        policy.response_log_probs = self._timed(policy.response_log_probs, "logprobs")
        policy.optimize = self._timed(policy.optimize, "update")
        if preference is not None and hasattr(preference, "prob"):
            preference.prob = self._timed(preference.prob, "preference")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._cuda = pl_module.device.type == "cuda"
        self._sync()
        self._open = {part: 0.0 for part in PARTS} | {"tokens": 0.0, "prompts": float(len(batch["prompt"]))}
        self._open["start"] = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._sync()
        step = self._open
        step["total"] = time.perf_counter() - step.pop("start")
        step["other"] = step["total"] - sum(step[p] for p in PARTS)
        self.steps.append(step)
        self._open = None

    def _sync(self) -> None:
        if self._cuda:
            import torch

            torch.cuda.synchronize()

    def _timed(self, fn, part: str, count_tokens=None):
        def wrapped(*args, **kwargs):
            if self._open is None or (self._stack and part != "preference"):  # nested in another part: its time
                return fn(*args, **kwargs)
            with self._time(part):
                out = fn(*args, **kwargs)
            for group in out if count_tokens is not None else ():
                responses = group[0] if isinstance(group, tuple) else group
                if responses.dim() == 3:  # an LM's token ids (N, k, T): count up to and including EOS
                    self._open["tokens"] += float(count_tokens.response_mask(responses).sum())
            return out

        return wrapped

    @contextmanager
    def _time(self, part: str):
        self._sync()
        self._stack.append(part)
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            elapsed = time.perf_counter() - start
            self._stack.pop()
            self._open[part] += elapsed
            if self._stack:  # a preference call inside another part: count it once, as preference
                self._open[self._stack[-1]] -= elapsed


def peak_memory_mb(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "machine": platform.machine(), "cpu": platform.processor() or "?"}
    for name in ("lit_nash", "torch", "lightning", "transformers", "peft"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


# -- the closed-form dynamics ------------------------------------------------------------------------------
def dynamics_throughput(games: int, actions: int, steps: int, algos: list[str], seed: int = 0) -> dict[str, Any]:
    """Seconds to run each algorithm's exact dynamics on ``games`` random ``actions``×``actions`` games for
    ``steps`` steps (``lit_nash.games.dynamics.simulate``, float64, one batched tensor program)."""
    import torch

    from lit_nash.algorithms import ALGORITHMS
    from lit_nash.games import egpo_random
    from lit_nash.games.dynamics import simulate

    unknown = sorted(set(algos) - set(ALGORITHMS))
    if unknown:
        raise SystemExit(f"lit_nash bench: bench.dynamics.algos has unknown algorithms {unknown}; choose from {sorted(ALGORITHMS)}")
    P = egpo_random(num_actions=actions, num_games=games, seed=seed).P
    out = {"games": games, "actions": actions, "steps": steps, "seconds": {}}
    for name in algos:
        algorithm = ALGORITHMS[name]()
        start = time.perf_counter()
        sim = simulate(algorithm, P, steps=steps)
        out["seconds"][name] = time.perf_counter() - start
        if not torch.isfinite(sim.log_pi).all():
            raise SystemExit(f"lit_nash bench: {name}'s dynamics produced non-finite policies")
    return out
