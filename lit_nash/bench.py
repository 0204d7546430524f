"""``python -m lit_nash bench [overrides]``: time a fixed number of online steps and print one JSON line.

The run is ``fit``'s: the same config (``conf/bench.yaml`` is ``conf/fit.yaml`` with ``task=bench``, the
shared CPU spec of ``conf/task/bench.yaml``), the same parts (``lit_nash.build``), the same Trainer loop,
minus MLflow and checkpoints. What a benchmark adds is measurement, through Lightning's profiler interface:

* the wall time of every step (one optimizer step), and its median over the steps after ``bench.warmup``;
* the split of a step into generation, preference calls and no-grad log-prob passes (the rollout
  service's ``generate``, ``preference`` and ``logprobs`` actions) and the update (Lightning's
  ``run_training_batch``: the loss forward with grad, backward and the optimizer step), each as a median
  over the same steps; what is left is ``other`` (pair selection, the schedule, metrics);
* the preference model's passes per step (``preference_passes_per_step``: sequences through its network, counted
  by a forward hook; a pairwise classifier reads k(k − 1) of them for k responses in all pairs, a Bradley–Terry
  model k, a GPM k + 1; null for an exact oracle), a median over the same steps;
* prompts/s and generated tokens/s over the whole step, and over the generation time alone (tokens up to and
  including EOS), peak memory (the process's peak RSS
  on CPU, peak allocated on CUDA), and the versions of everything that changes the figures;
* with ``bench.mfu``, the floating-point operations of the update and of the no-grad log-prob passes, counted
  as they run on the warm-up steps (``torch.utils.flop_counter``: matrix products and attention, recomputation
  included; its Python dispatch would slow the timed steps by 10-35%, so they run without it), and their
  model-FLOPs utilization: the median counted FLOPs over the part's median measured seconds, as a share of this
  device's bf16 matrix-product rate, measured on a large square product when training starts and again when it
  ends, the faster kept (fp32's rate is reported beside it);
* optionally (``bench.dynamics``), the throughput of the closed-form matrix-game dynamics.

On CUDA each timed action synchronizes so that the time is the GPU's too.
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
from lightning.pytorch.profilers import Profiler
from omegaconf import DictConfig, open_dict

PARTS = ("generate", "preference", "logprobs", "update")
FLOP_PARTS = ("update", "logprobs")  # the passes MFU is reported for: the loss's forward and backward, the snapshots' forwards


@hydra.main(version_base="1.3", config_path="pkg://lit_nash.conf", config_name="bench")
def main(cfg: DictConfig) -> None:
    from lit_nash.cli import run_folder_settled

    with run_folder_settled():  # a run refused before it wrote anything leaves no run folder
        print(json.dumps(bench(cfg)))


def bench(cfg: DictConfig) -> dict[str, Any]:
    import torch

    from lit_nash.build import build_run, build_trainer, check_config
    from lit_nash.rng import RNGCheckpoint

    check_config(cfg)  # fit's start-up checks: the same config
    spec = cfg.bench
    if spec.threads:
        torch.set_num_threads(int(spec.threads))
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    build_spec_files(cfg)
    import transformers  # noqa: F401  (loaded before the runtime's memory is read: it is runtime, not the run's)

    runtime = rss_mb()
    parts = build_run(cfg, evaluate=False)
    algorithm, policy = parts.algorithm, parts.network
    timer = StepTimer(count_flops=bool(spec.get("mfu", True)), counted_steps=int(spec.warmup))
    quiet = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False, "enable_model_summary": False}
    trainer = build_trainer(cfg, **quiet, profiler=timer.profiler, callbacks=[algorithm, RNGCheckpoint(cfg.seed), timer])
    parts.rollouts.profiler = timer.profiler
    counting = count_passes(parts.preference, timer.profiler)
    trainer.fit(parts.policy, datamodule=parts.data)
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
        "preference_passes_per_step": statistics.median(s["preference_passes"] for s in kept) if counting else None,
        "prompts_per_s": sum(s["prompts"] for s in kept) / seconds,
        "generated_tokens_per_s": sum(s["tokens"] for s in kept) / seconds,
        "generation_tokens_per_s": sum(s["tokens"] for s in kept) / max(sum(s["generate"] for s in kept), 1e-9),
        "peak_memory_mb": peak_memory_mb(policy.device),
        "memory": "cuda_max_allocated" if policy.device.type == "cuda" else "max_rss",
        "memory_floor_mb": memory_floor_mb(parts, trainer),
        "runtime_mb": runtime if policy.device.type == "cpu" else 0.0,  # the process before any model: Python, torch, ...
        "threads": torch.get_num_threads(),
        "bf16": bf16_capability(policy.device),
        "config": {"prompts_per_step": cfg.rollout.prompts_per_step, "max_new_tokens": cfg.policy.max_new_tokens,
                   "k": cfg.algo.get("k"), "dtype": cfg.policy.dtype, "precision": str(trainer.precision),
                   "lr": cfg.policy.optimizer.lr, "lora": cfg.policy.lora is not None},
        "versions": versions(),
    }
    if (peak := timer.matmul_tflops) is not None and spec.warmup:
        counted = timer.steps[:spec.warmup]
        result["matmul_tflops"] = peak
        result["flops"] = {part: statistics.median(s[f"{part}_flops"] for s in counted) for part in FLOP_PARTS}
        result["mfu"] = {part: round(result["flops"][part] / split[part] / (peak["bfloat16"] * 1e12), 4)
                         if split[part] > 0 else None for part in FLOP_PARTS}
    if spec.dynamics:
        result["dynamics"] = dynamics_throughput(**spec.dynamics)
    return result


def matmul_rates(device, n: int | None = None, repeats: int = 5) -> dict[str, float]:
    """TFLOP/s of one n×n by n×n matrix product in bf16 and fp32 on ``device`` (the best of ``repeats`` after a
    warm-up; n = 1024 on a CPU, 8192 on a GPU), with the threads the run uses: the peak MFU is measured against."""
    import torch

    n = n or (8192 if device.type == "cuda" else 1024)
    out = {}
    for dtype in (torch.bfloat16, torch.float32):
        a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
        best = float("inf")
        for i in range(repeats + 1):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            a @ b
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i:  # the first is a warm-up
                best = min(best, time.perf_counter() - start)
        out[str(dtype).removeprefix("torch.")] = round(2 * n**3 / best / 1e12, 4)
        del a, b
    return out


# -- the shared spec's files: a tiny GPT-2 policy, a reward model and a prompt file, built offline -------
def build_spec_files(cfg: DictConfig) -> None:
    """Write the spec's model directories and prompts into the run folder where the config leaves them null."""
    import random

    from lit_nash.models import tiny_causal_lm, tiny_sequence_classifier

    spec = cfg.bench.spec
    if spec is None:  # a spec of real models (task=bench_real): every path is given
        return
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
            if str(cfg.preference.get("_target_")).endswith(".GeneralPreferenceModel"):  # preference=gpm: its head on it
                from lit_nash.preference.gpm import save_new

                cfg.preference.path = str(save_new(cfg.preference.path, root / "gpm"))
        if "path" in cfg.data and cfg.data.path is None:
            rng = random.Random(cfg.seed)
            prompts = root / "prompts.jsonl"
            prompts.parent.mkdir(parents=True, exist_ok=True)
            prompts.write_text("".join(
                json.dumps({"prompt": " ".join(rng.choice(words) for _ in range(spec.prompt_words))}) + "\n"
                for _ in range(spec.prompts)))
            cfg.data.path = str(prompts)


# -- timing ----------------------------------------------------------------------------------------------
def count_passes(preference, profiler) -> bool:
    """Count the sequences each forward of a text preference model's network reads into the current step
    (``preference_passes``); False for a preference without a network (an exact oracle)."""
    import torch

    model = getattr(preference, "model", None)
    if not isinstance(model, torch.nn.Module):
        return False

    def count(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None and profiler.current is not None:
            profiler.current["preference_passes"] += int(ids.shape[0])

    model.register_forward_pre_hook(count, with_kwargs=True)
    return True



class StepProfiler(Profiler):
    """Lightning's profiler interface, adding each timed action's seconds to the current step's dict."""

    ACTIONS = {"generate": "generate", "preference": "preference", "logprobs": "logprobs", "run_training_batch": "update"}

    def __init__(self):
        super().__init__()
        self.current: dict[str, float] | None = None
        self._started: dict[str, float] = {}
        self._counting: dict[str, Any] = {}
        self.count_flops = False  # this step's update and log-prob passes run under a FLOP counter
        self.cuda = False

    def start(self, action_name: str) -> None:
        if action_name in self.ACTIONS:
            if self.count_flops and self.ACTIONS[action_name] in FLOP_PARTS:
                from torch.utils.flop_counter import FlopCounterMode

                self._counting[action_name] = FlopCounterMode(display=False)
                self._counting[action_name].__enter__()
            self._sync()
            self._started[action_name] = time.perf_counter()

    def stop(self, action_name: str) -> None:
        started = self._started.pop(action_name, None)
        if started is not None and self.current is not None:
            self._sync()
            part = self.ACTIONS[action_name]
            self.current[part] += time.perf_counter() - started
            counter = self._counting.pop(action_name, None)
            if counter is not None:
                counter.__exit__(None, None, None)
                self.current[f"{part}_flops"] += counter.get_total_flops()

    def _sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    def summary(self) -> str:
        return ""


class StepTimer(L.Callback):
    """Per-step wall time (from the end of one step to the end of the next: the rollout, the update, the
    callbacks) and its split into the parts of an online step; generated tokens counted from the rollout."""

    def __init__(self, count_flops: bool = False, counted_steps: int = 0):
        self.profiler = StepProfiler()
        self.count_flops, self.counted_steps = count_flops, counted_steps  # FLOPs counted on the first steps only
        self.steps: list[dict[str, float]] = []
        self.matmul_tflops: dict[str, float] | None = None  # measured on the training device at its start
        self._last_rollout = None
        self._open()

    def _open(self) -> None:
        self.profiler.current = ({part: 0.0 for part in PARTS} | {"tokens": 0.0, "prompts": 0.0, "preference_passes": 0}
                                 | {f"{part}_flops": 0.0 for part in FLOP_PARTS})
        self.profiler.count_flops = self.count_flops and len(self.steps) < self.counted_steps
        self._start = time.perf_counter()

    def on_train_start(self, trainer, pl_module) -> None:
        if self.count_flops:
            self.matmul_tflops = matmul_rates(pl_module.device)
        self.profiler.cuda = pl_module.device.type == "cuda"
        self.profiler._sync()
        self._open()

    def on_train_end(self, trainer, pl_module) -> None:
        if self.count_flops:  # the peak is the device's best: again after training, the faster of the two kept
            again = matmul_rates(pl_module.device)
            self.matmul_tflops = {k: max(v, again[k]) for k, v in self.matmul_tflops.items()}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.profiler._sync()
        step = self.profiler.current
        step["total"] = time.perf_counter() - self._start
        step["other"] = step["total"] - sum(step[p] for p in PARTS)
        if batch is not self._last_rollout and hasattr(batch, "samples"):  # a round's later epochs sample nothing
            step["prompts"] = float(len(set(batch.prompt.tolist())))
            network = pl_module.network
            for responses in batch.samples.values():
                if responses.dim() == 3:  # an LM's token ids (N, k, T): count up to and including EOS
                    step["tokens"] += float(network.response_mask(responses).sum())
            self._last_rollout = batch
        self.steps.append(step)
        self._open()


def peak_memory_mb(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def rss_mb() -> float:
    """The process's resident memory now, in MiB (Linux /proc/self/statm)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def memory_floor_mb(parts, trainer) -> dict[str, float]:
    """The tensors the algorithm must hold in this process, in MiB (an FSDP2 shard's local part), each counted
    once (shared storage once): the policy's
    parameters (a frozen base included), the gradients of its trainable ones, the optimizer state, the
    snapshots it reads, a two-call algorithm's saved θ_t and optimizer state, the preference model. On a CPU
    the peak (max RSS) adds the Python and torch runtime and the activations to this floor."""
    import torch

    seen: set[int] = set()

    def local(t):  # this process's part of an FSDP2 shard (DTensor)
        return t.to_local() if hasattr(t, "to_local") else t

    def mib(tensors) -> float:
        total = 0
        for t in tensors:
            if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                continue
            t = local(t)
            key = t.untyped_storage().data_ptr()
            if key in seen:
                continue
            seen.add(key)
            total += t.untyped_storage().nbytes()
        return total / 2**20

    def flat(value):
        if isinstance(value, torch.Tensor):
            yield value
        elif isinstance(value, dict):
            for v in value.values():
                yield from flat(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                yield from flat(v)

    network, optimizer = parts.network, trainer.optimizers[0] if trainer.optimizers else None
    trainable = sum(local(p).numel() * p.element_size() for p in network.parameters() if p.requires_grad) / 2**20
    split = {
        "snapshots": mib(network.snapshots.buffers()),  # full-FT snapshots are copies; LoRA's hold adapters
        "parameters": mib(network.parameters()),
        "gradients": trainable,
        "optimizer_state": mib(flat(optimizer.state_dict()["state"])) if optimizer is not None else 0.0,
        "preference": mib(flat(list(parts.preference.state_dict().values())))
        if isinstance(parts.preference, torch.nn.Module) else 0.0,
    }
    # EGPO's and Nash-MP's first call keeps θ_t and the optimizer state to come back to (two_call.TwoCallStep)
    split["saved_iterate"] = trainable + split["optimizer_state"] if hasattr(parts.algorithm, "two_call") else 0.0
    split["total"] = sum(split.values())
    return {k: round(v, 3) for k, v in split.items()}


BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")  # the CPU features that make bf16 matmuls fast (ENVIRONMENT.md §7)


def bf16_capability(device) -> dict[str, Any]:
    """What the bench ran on for bf16: the CPU's bf16 flags (Linux ``/proc/cpuinfo``) or the GPU's support,
    since the same ``trainer.precision=bf16-mixed`` is several times faster on some CPUs and slower on others."""
    import torch

    if device.type == "cuda":
        return {"device": torch.cuda.get_device_name(device), "supported": torch.cuda.is_bf16_supported()}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        flags = []
    present = [flag for flag in BF16_CPU_FLAGS if flag in flags]
    return {"device": "cpu", "cpu_flags": present, "fast": bool(present)}


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
def dynamics_throughput(games: int, actions: int, steps: int, algos: list[str] | None = None, seed: int = 0) -> dict[str, Any]:
    """Seconds to run each algorithm's exact dynamics on ``games`` random ``actions``×``actions`` games for
    ``steps`` steps (``lit_nash.algorithms.simulate``, float64, one batched tensor program)."""
    import torch

    from lit_nash.algorithms import ALGORITHMS
    from lit_nash.algorithms.simulate import simulate
    from lit_nash.games import egpo_random

    algos = list(ALGORITHMS) if algos is None else list(algos)
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
