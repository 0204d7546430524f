"""The trained causal LM as a LightningModule, behind the same interface as ``TabularPolicy``.

Algorithms call ``sample`` (K responses per prompt, one batched KV-cache loop for every source: the
policy, a snapshot, or the token-level geometric mixture of policy and reference), ``response_log_probs``
(one batched forward) and the snapshot methods. On a ``TokenGame`` the policy's exact distribution over
the game's actions is computable (``log_probs``, ``snapshot``), so ``GameMetrics`` works unchanged.

Snapshots never duplicate base weights when LoRA is on: each is another adapter on the same peft model,
evaluated by switching the active adapter. Without LoRA a snapshot is a full state copy (buffers),
evaluated with ``torch.func.functional_call``. Both live in ``state_dict()``, hence in checkpoints.
"""

from __future__ import annotations

import copy
import re
import warnings
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import lightning as L
import torch
from torch import Tensor, nn
from torch.func import functional_call

from lit_nash.algorithms.base import accumulate
from lit_nash.sharding import parameters_at_rest
from lit_nash.guards import NumericalError, check_finite, check_gradients, in_step
from lit_nash.metrics import is_logging_step

DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}
OPTIMIZERS = {"adamw": torch.optim.AdamW, "sgd": torch.optim.SGD, "rmsprop": torch.optim.RMSprop}
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:_[A-Za-z0-9]+)*(?:/[0-9]+)?")  # "ref", "magnet", "history/0"
_PREFIX = "snap__"  # adapter / state-copy key = prefix + name, "/" → "__" (keys hold no "/", never shadow .half())
_LORA_KEY = re.compile(r"\.lora_(?:embedding_)?A\.(snap__[^.]+)\.")
TINY = 1e-12  # floor of the invalid action's probability, so its log stays finite


def _key(name: str) -> str:
    return _PREFIX + name.replace("/", "__")


def _snapshot_name(key: str) -> str:
    return key[len(_PREFIX):].replace("__", "/")


def _plain(config: Any) -> dict:
    """A Hydra DictConfig (whose lists are not ``list``s, which peft checks for) as plain Python."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(config) if OmegaConf.is_config(config) else dict(config)


def _check_name(name: str) -> None:
    if not _NAME.fullmatch(name):
        raise ValueError(f"snapshot name {name!r} must look like 'magnet', 'prev_iter' or 'history/0'")


def _disable_dropout(model: nn.Module) -> None:
    """Sampling and training must score responses with one function: NLHF losses are on-policy ratios."""
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
        if isinstance(getattr(m, "attention_dropout", None), float):
            m.attention_dropout = 0.0


@contextmanager
def _swapped(model: nn.Module, tensors: dict[str, Tensor]) -> Iterator[None]:
    """The model's parameters hold ``tensors`` inside the block (no grad), and their own values after."""
    params = parameters_at_rest(model)
    with torch.no_grad():
        saved = {name: params[name].detach().clone() for name in tensors}
        for name, value in tensors.items():
            params[name].copy_(value)
    try:
        yield
    finally:
        params = parameters_at_rest(model)  # drop the gathered snapshot values FSDP2 keeps after a forward
        with torch.no_grad():
            for name, value in saved.items():
                params[name].copy_(value)


class _StateCopy(nn.Module):
    """A frozen copy of a model's parameters, as buffers ('.' in parameter names becomes '-')."""

    def tensors(self) -> dict[str, Tensor]:
        return {k.replace("-", "."): v for k, v in self._buffers.items()}

    def copy_from(self, model: nn.Module) -> "_StateCopy":
        for name, p in parameters_at_rest(model).items():
            key = name.replace(".", "-")
            if key in self._buffers and self._buffers[key].shape == p.shape:
                self._buffers[key].copy_(p.detach())
            else:
                self.register_buffer(key, p.detach().clone())
        return self


def draw(probs: Tensor, generator: torch.Generator, components: list[tuple[str, float]]) -> Tensor:
    """One token per row; NaN or infinite logits (torch refuses to sample them) are a numerical error."""
    try:
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    except RuntimeError as e:
        if torch.isfinite(probs).all():
            raise
        raise NumericalError(f"non-finite logits of {' + '.join(repr(n) for n, _ in components)} while sampling") from e


class CausalLMPolicy(L.LightningModule):
    def __init__(
        self,
        model_path: str,
        prompts: list | None = None,
        use_chat_template: bool | None = None,
        max_prompt_tokens: int | None = None,
        max_new_tokens: int = 8,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        lora: dict | None = None,
        dtype: str = "float32",
        trust_remote_code: bool = False,
        pad_token: str | None = None,
        algorithm: Any = None,
        preference: Any = None,
        game: Any = None,
        lr: float = 1e-3,
        optimizer: str = "adamw",
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        grad_clip: float | None = None,
        micro_batches: int = 1,
    ):
        super().__init__()
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if dtype not in DTYPES:
            raise ValueError(f"policy.dtype must be one of {list(DTYPES)}, got {dtype!r}")
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"policy.optimizer must be one of {list(OPTIMIZERS)}, got {optimizer!r}")
        if max_new_tokens < 1:
            raise ValueError(f"policy.max_new_tokens must be ≥ 1, got {max_new_tokens}")
        if not lr > 0 or weight_decay < 0 or warmup_steps < 0 or (grad_clip is not None and not grad_clip > 0):
            raise ValueError(f"policy: need lr > 0, weight_decay >= 0, warmup_steps >= 0 and grad_clip > 0 or null; "
                             f"got lr={lr}, weight_decay={weight_decay}, warmup_steps={warmup_steps}, grad_clip={grad_clip}")
        if int(micro_batches) != micro_batches or micro_batches < 1:
            raise ValueError(f"policy.micro_batches must be an integer >= 1, got {micro_batches}")
        if max_prompt_tokens is not None and max_prompt_tokens < 1:
            raise ValueError(f"policy.max_prompt_tokens must be >= 1 or null, got {max_prompt_tokens}")
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
            raise ValueError(f"policy.temperature must be > 0, got {temperature}")
        if isinstance(top_k, bool) or not isinstance(top_k, (int, float)) or int(top_k) != top_k or top_k < 0:
            raise ValueError(f"policy.top_k must be an integer >= 0 (0 = off), got {top_k}")
        if isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1:
            raise ValueError(f"policy.top_p must lie in (0, 1] (1.0 = off), got {top_p}")
        from lit_nash.models import check_model_dir, check_vocab_fits, resolve_pad_token

        check_model_dir(model_path, "policy.model_path")
        if prompts is None:
            if game is None:
                raise ValueError("CausalLMPolicy needs prompts, or a game to take them from")
            prompts = list(game.prompts)
        elif game is not None and list(prompts) != list(game.prompts):
            raise ValueError(f"policy prompts {list(prompts)} differ from the game's {list(game.prompts)}")
        self.save_hyperparameters(ignore=["algorithm", "preference", "game"], logger=False)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(model_path), trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as e:  # neither a local model directory nor a reachable hub model
            raise FileNotFoundError(f"policy.model_path {str(model_path)!r}: no tokenizer found ({e}); give a model "
                                    "directory saved with save_pretrained (model and tokenizer), or a hub name") from e
        if self.tokenizer.eos_token_id is None:
            raise ValueError(f"the tokenizer in {str(model_path)!r} has no EOS token")
        self.eos_id = self.tokenizer.eos_token_id
        self.pad_id = resolve_pad_token(self.tokenizer, pad_token, "policy.pad_token", str(model_path))
        try:
            model = AutoModelForCausalLM.from_pretrained(
                str(model_path), trust_remote_code=trust_remote_code, use_safetensors=True, dtype=DTYPES[dtype]
            )
        except OSError as e:  # a tokenizer but no (safetensors) weights
            raise FileNotFoundError(f"policy.model_path {str(model_path)!r}: no causal LM could be loaded ({e}); "
                                    "save the model there with save_pretrained (safetensors)") from e
        check_vocab_fits(self.tokenizer, model, "policy.model_path", str(model_path), str(model_path))
        self.lora = bool(lora)
        if self.lora:
            from peft import LoraConfig, get_peft_model

            with warnings.catch_warnings():  # peft calls a transformers method deprecated in v5; not ours to fix
                warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
                model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", **_plain(lora)))
        _disable_dropout(model)  # LoRA's dropout too
        self.model = model.train()  # from_pretrained leaves eval mode; without dropout the two modes agree
        self.prompts = list(prompts)
        self.chat = self._chat_mode(use_chat_template)
        self._prompt_tokens: dict[int, list[int]] = {}  # tokenized on first use: datasets can be large
        self._sharded = False  # set by configure_model under ModelParallelStrategy (FSDP2)
        self.state_copies = nn.ModuleDict()  # snapshots without LoRA; with LoRA they are adapters instead
        if not self.lora:
            self.refresh_snapshot("ref")  # the starting weights (with LoRA, "ref" = adapters disabled)
        self.game = game
        if game is not None:
            self.register_buffer("response_ids", self._encode_responses(game.responses), persistent=False)
        self._ref_exact: Tensor | None = None
        self.algorithm = algorithm
        # not a submodule: a preference model is not part of the policy's checkpoint, and is not sharded
        # with it; on_fit_start puts it on the policy's device unless it was pinned to its own
        self.__dict__["preference"] = preference
        if hasattr(preference, "read_with"):  # a text preference model reads the policy's ids as text
            preference.read_with(self.prompt_text, self.decode)
        self.automatic_optimization = False

    # -- sampling and scoring --------------------------------------------------------------------------
    @torch.no_grad()
    def sample(
        self,
        prompt: Tensor,
        k: int,
        source: str = "policy",
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        mixture_coef: float = 0.0,
        return_log_probs: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """K responses per prompt (N, k, T), ending with EOS then pad; T ≤ max_new_tokens.

        With ``return_log_probs`` also the responses' log-probs (N, k) under the source's untempered,
        unfiltered distribution. One group of ``sample_groups``.
        """
        group = dict(k=k, source=source, temperature=temperature, top_k=top_k, top_p=top_p, mixture_coef=mixture_coef)
        return self.sample_groups(prompt, [group], return_log_probs=return_log_probs)[0]

    @torch.no_grad()
    def sample_groups(
        self, prompt: Tensor, groups: list[dict], return_log_probs: bool = False, seeds: list[int] | None = None,
    ) -> list[Tensor] | list[tuple[Tensor, Tensor]]:
        """Several groups of responses to the same prompts in ONE decoding loop: one result per group, as
        ``sample(prompt, **group)`` returns it. A group is a dict of ``sample``'s arguments (``k``, ``source``,
        ``temperature``, ``top_k``, ``top_p``, ``mixture_coef``).

        Each model a step needs (the policy, a snapshot, the reference) runs once per token over the rows
        of every group that uses it, with one KV cache: a proposal pair and y'' from the policy share one
        forward, and the policy samples of Nash-MD share theirs with the mixture's policy half. Each group
        draws from its own generator, seeded from torch's global stream (or ``seeds``), so a group's
        samples do not depend on which groups it was fused with (tests/policy/test_causal_lm.py).
        """
        from transformers import DynamicCache

        N = prompt.shape[0]
        if seeds is None:
            seeds = torch.randint(0, 2**62, (len(groups),)).tolist()  # on the CPU stream, like every other draw
        plans = []  # per group: its rows of the batch, mixture components, warpers and generator
        offset = 0
        for group, seed in zip(groups, seeds):
            g = dict(group)
            k = int(g.pop("k"))
            components = self._sources(g.pop("source", "policy"), g.pop("mixture_coef", 0.0))
            warp = self._warpers(g.pop("temperature", None), g.pop("top_k", None), g.pop("top_p", None))
            if g:
                raise TypeError(f"sample_groups: unknown group keys {sorted(g)}")
            generator = torch.Generator(device=self.device).manual_seed(int(seed))
            plans.append((slice(offset, offset + N * k), k, components, warp, generator))
            offset += N * k
        one_ids, one_mask = self._prompt_batch(prompt, 1)
        ids = torch.cat([one_ids.repeat_interleave(plan[1], 0) for plan in plans])
        mask = torch.cat([one_mask.repeat_interleave(plan[1], 0) for plan in plans])
        B = ids.shape[0]
        # the rows each model runs on: every group that has it as a mixture component
        models: dict[str, Tensor] = {}
        for rows, _, components, _, _ in plans:
            for name, _ in components:
                r = torch.arange(rows.start, rows.stop, device=ids.device)
                models[name] = r if name not in models else torch.cat([models[name], r])
        caches = {name: DynamicCache(config=self.model.config) for name in models}
        # where each group's rows sit inside each model's rows
        where = {name: {i: torch.searchsorted(r, torch.arange(p[0].start, p[0].stop, device=r.device))
                        for i, p in enumerate(plans) if any(n == name for n, _ in p[2])} for name, r in models.items()}
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        step_ids, seq, tokens = ids, ids, []
        done = torch.zeros(B, dtype=torch.bool, device=ids.device)
        logp = torch.zeros(B, dtype=torch.float32, device=ids.device)
        for _ in range(self.hparams.max_new_tokens):
            out = {
                name: self._call(
                    name, input_ids=step_ids[r], attention_mask=mask[r], position_ids=pos[r],
                    past_key_values=caches[name], use_cache=True, logits_to_keep=1,
                ).logits[:, -1].float()
                for name, r in models.items()
            }
            nxt = torch.empty(B, dtype=torch.long, device=ids.device)
            lp = torch.empty(B, dtype=torch.float32, device=ids.device)
            for i, (rows, _, components, warp, generator) in enumerate(plans):
                logits = sum(w * out[name][where[name][i]] for name, w in components)
                probs = warp(seq[rows], logits).softmax(-1)
                nxt[rows] = draw(probs, generator, components)
                lp[rows] = logits.log_softmax(-1).gather(-1, nxt[rows, None]).squeeze(-1)
            nxt = torch.where(done, torch.full_like(nxt, self.pad_id), nxt)
            logp += torch.where(done, torch.zeros_like(lp), lp)
            tokens.append(nxt)
            done |= nxt == self.eos_id
            if self._all_done(done):
                break
            step_ids = nxt[:, None]
            seq = torch.cat([seq, step_ids], -1)
            mask = torch.cat([mask, torch.ones_like(step_ids)], -1)
            pos = pos[:, -1:] + 1
        responses = torch.stack(tokens, -1)
        results = []
        for rows, k, *_ in plans:
            r = responses[rows].view(N, k, -1)
            results.append((r, logp[rows].view(N, k)) if return_log_probs else r)
        return results

    def _all_done(self, done: Tensor) -> bool:
        """Every sequence has ended, on every rank: each forward of a sharded model is a collective, so all
        ranks must take the same number of decoding steps; DDP does the same, so a rank's samples (and its
        random stream) do not depend on how the model is distributed."""
        import torch.distributed as dist

        finished = done.all()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            flag = finished.to(torch.int32).reshape(1)
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
            finished = flag[0].bool()
        return bool(finished)

    def response_log_probs(
        self, prompt: Tensor, responses: Tensor, source: str = "policy", reduction: str = "sum",
        mixture_coef: float = 0.0,
    ) -> Tensor:
        """log π(y | x) (N, k) of responses (N, k, T), over the tokens up to and including the first EOS.

        ``mean`` is the per-token mean. One batched forward; with grad only for the current policy.
        """
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
        N, k, T = responses.shape
        sources = self._sources(source, mixture_coef)
        ids, mask = self._prompt_batch(prompt, k)
        resp = responses.reshape(N * k, T).to(ids.device)
        rmask = self.response_mask(resp)
        full, fmask = torch.cat([ids, resp], -1), torch.cat([mask, rmask.long()], -1)
        pos = (fmask.cumsum(-1) - 1).clamp(min=0)
        with torch.set_grad_enabled(torch.is_grad_enabled() and source == "policy"):
            logits = sum(
                w * self._call(
                    name, input_ids=full, attention_mask=fmask, position_ids=pos, logits_to_keep=T + 1
                ).logits[:, :-1].float()
                for name, w in sources
            )
            lp = logits.log_softmax(-1).gather(-1, resp[..., None]).squeeze(-1) * rmask
            out = lp.sum(-1)
            if reduction == "mean":
                out = out / rmask.sum(-1).clamp(min=1)
        return check_finite(out, f"log-probs of {source!r}").view(N, k)

    def response_mask(self, responses: Tensor) -> Tensor:
        """True on the tokens up to and including the first EOS (all tokens if there is none)."""
        eos = responses == self.eos_id
        return (eos.long().cumsum(-1) - eos.long()) == 0

    # -- exact distribution on a token game --------------------------------------------------------------
    @torch.no_grad()
    def log_probs(self, source: str = "policy") -> Tensor:
        """Exact log-distribution (prompts, A) over the game's actions; the last is the invalid action."""
        if self.game is None:
            raise ValueError("log_probs() needs the policy's game (CausalLMPolicy(game=...))")
        P, (R, L) = len(self.game.prompts), self.response_ids.shape
        prompts = torch.arange(P)
        lp = self.response_log_probs(prompts, self.response_ids.expand(P, R, L), source=source).double()
        invalid = (1.0 - lp.exp().sum(-1)).clamp(min=TINY).log()
        return torch.cat([lp, invalid[:, None]], -1)

    def snapshot(self, name: str) -> Tensor:
        """A snapshot's exact distribution (prompts, A); a history ring gives (n, prompts, A), newest first."""
        if name == "ref":
            if self._ref_exact is None or self._ref_exact.device != self.device:
                self._ref_exact = self.log_probs("ref")  # cached: the reference changes only on refresh
            return self._ref_exact
        ring = self._ring(name)
        if ring:
            return torch.stack([self.log_probs(f"{name}/{i}") for i in range(ring)])
        return self.log_probs(name)

    def invalid_mass(self) -> float:
        """Mean over prompts of the probability of emitting anything that is not a game response."""
        return float(self.log_probs()[:, -1].exp().mean())

    # -- snapshots ------------------------------------------------------------------------------------------
    def snapshot_names(self) -> list[str]:
        if self.lora:
            return sorted({"ref"} | {_snapshot_name(a) for a in self.model.peft_config if a.startswith(_PREFIX)})
        return sorted(_snapshot_name(k) for k in self.state_copies.keys())

    def has_snapshot(self, name: str) -> bool:
        return name in self.snapshot_names() or self._ring(name) > 0

    def refresh_snapshot(self, name: str) -> None:
        """Snapshot ``name`` ← the current policy."""
        _check_name(name)
        if self.lora:
            self._copy_adapter("default", self._new_adapter(name))
        elif _key(name) in self.state_copies:
            self.state_copies[_key(name)].copy_from(self.model)
        else:
            self.state_copies[_key(name)] = _StateCopy().to(self.device).copy_from(self.model)
        if name == "ref":
            self._ref_exact = None

    def push_snapshot(self, name: str, maxlen: int) -> None:
        """Prepend the current policy to the history ring ``name``: ``name/0`` is the newest, ``maxlen`` kept."""
        _check_name(name)
        if maxlen < 1:
            raise ValueError(f"push_snapshot maxlen must be ≥ 1, got {maxlen}")
        n = self._ring(name)
        if self.lora:
            for i in range(min(n, maxlen - 1), 0, -1):
                self._copy_adapter(_key(f"{name}/{i - 1}"), self._new_adapter(f"{name}/{i}"))
            for i in range(maxlen, n):
                self.model.delete_adapter(_key(f"{name}/{i}"))
            self.refresh_snapshot(f"{name}/0")
            return
        old = [self.state_copies.pop(_key(f"{name}/{i}")) for i in range(n)]
        newest = old[maxlen - 1] if n >= maxlen else _StateCopy().to(self.device)  # reuse the oldest's buffers
        for i, m in enumerate([newest.copy_from(self.model)] + old[: maxlen - 1]):
            self.state_copies[_key(f"{name}/{i}")] = m

    def restore_snapshot(self, name: str) -> None:
        """The current policy ← snapshot ``name`` (in place, so the optimizer keeps its parameters)."""
        if not self.has_snapshot(name) or self._ring(name):
            raise KeyError(f"no snapshot {name!r}; taken so far: {self.snapshot_names()}")
        if self.lora:
            if _key(name) not in self.model.peft_config:
                raise ValueError(f"snapshot {name!r} is the base model (adapters disabled); it cannot be restored")
            self._copy_adapter(_key(name), "default")
        else:
            with torch.no_grad():
                params = parameters_at_rest(self.model)
                for key, value in self.state_copies[_key(name)].tensors().items():
                    params[key].copy_(value)

    def _ring(self, name: str) -> int:
        names, n = set(self.snapshot_names()), 0
        while f"{name}/{n}" in names:
            n += 1
        return n

    def _new_adapter(self, name: str) -> str:
        """The (frozen) adapter of snapshot ``name``, created like "default" if missing."""
        adapter = _key(name)
        if adapter not in self.model.peft_config:
            config = copy.deepcopy(self.model.peft_config["default"])
            config.inference_mode = True
            devices = [self.device.index or 0] if self.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):  # its init is overwritten: keep the sampling stream intact
                self.model.add_adapter(adapter, config)
            self.model.set_adapter("default")
        return adapter

    @torch.no_grad()
    def _copy_adapter(self, src: str, dst: str) -> None:
        params = dict(self.model.named_parameters())
        for key, p in params.items():
            if f".{src}." in key:
                params[key.replace(f".{src}.", f".{dst}.")].copy_(p)

    # -- model calls ------------------------------------------------------------------------------------
    def _sources(self, source: str, mixture_coef: float) -> list[tuple[str, float]]:
        if source == "mixture":
            c = float(mixture_coef)
            if not 0.0 <= c <= 1.0:
                raise ValueError(f"mixture_coef must lie in [0, 1], got {c}")
            return [("policy", 1.0 - c), ("ref", c)]
        if source != "policy" and (not self.has_snapshot(source) or self._ring(source)):
            raise KeyError(f"no snapshot {source!r}; taken so far: {self.snapshot_names()}")
        return [(source, 1.0)]

    def _call(self, source: str, **kwargs):
        """One forward of the model as ``source``: the policy, an adapter, the base model, or a state copy."""
        if source == "policy":
            return self.model(**kwargs)
        if not self.lora:
            tensors = self.state_copies[_key(source)].tensors()
            if self._sharded:  # FSDP's hooks gather the module's own parameters: put the snapshot in them
                with _swapped(self.model, tensors):
                    return self.model(**kwargs)
            return functional_call(self.model, tensors, args=(), kwargs=kwargs)
        adapter = _key(source)
        if adapter not in self.model.peft_config:  # "ref": the starting adapter is fresh (B = 0), so base = ref
            with self.model.disable_adapter():
                return self.model(**kwargs)
        self.model.set_adapter(adapter, inference_mode=True)
        try:
            return self.model(**kwargs)
        finally:
            self.model.set_adapter("default")  # back to the active, trainable adapter

    def _prompt_batch(self, prompt: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """Left-padded ids and mask of these prompts only (padded to the longest of them), each repeated
        k times (row n·k + j)."""
        rows = [self.prompt_tokens(i) for i in prompt.tolist()]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for n, r in enumerate(rows):
            ids[n, width - len(r):] = torch.tensor(r, dtype=torch.long)
            mask[n, width - len(r):] = 1
        return ids.to(self.device).repeat_interleave(k, 0), mask.to(self.device).repeat_interleave(k, 0)

    # -- prompts as the policy sees them, and as the preference model reads them -----------------------
    def _chat_mode(self, use_chat_template: bool | None) -> bool:
        """Whether plain-text prompts are wrapped as a user turn; conversations always use the template."""
        has = bool(getattr(self.tokenizer, "chat_template", None))
        where = f"policy.model_path {self.hparams.model_path!r}"
        if use_chat_template and not has:
            raise ValueError(f"policy.use_chat_template is true but the tokenizer of {where} has no chat template")
        conversational = any(not isinstance(p, str) for p in self.prompts)
        if conversational and not has:
            raise ValueError(f"the prompts are conversations but the tokenizer of {where} has no chat template")
        if conversational and use_chat_template is False:
            raise ValueError("the prompts are conversations: they need policy.use_chat_template true or null")
        return has if use_chat_template is None else bool(use_chat_template)

    def prompt_tokens(self, i: int) -> list[int]:
        """Token ids of prompt i: a conversation (or, with a chat template on, a plain prompt as one user
        turn) through the chat template with the generation prompt; plain text as the tokenizer encodes it.
        ``max_prompt_tokens`` keeps the last tokens (the end holds the question and the generation prompt)."""
        if i not in self._prompt_tokens:
            prompt = self.prompts[i]
            if isinstance(prompt, str) and not self.chat:
                ids = self.tokenizer(prompt)["input_ids"]
            else:
                messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
                text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
                ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]  # the template has its own
            if not ids:
                raise ValueError(f"prompt {i} ({prompt!r}) has no tokens (the tokenizer adds none, e.g. no BOS)")
            limit = self.hparams.max_prompt_tokens
            self._prompt_tokens[i] = list(ids if limit is None else ids[-limit:])
        return self._prompt_tokens[i]

    def prompt_text(self, i: int) -> str:
        """Prompt i as text for a preference model: the string, a one-turn conversation's message, or the
        turns as "role: content" lines."""
        prompt = self.prompts[i]
        if isinstance(prompt, str):
            return prompt
        if len(prompt) == 1:
            return prompt[0]["content"]
        return "\n".join(f"{m['role']}: {m['content']}" for m in prompt)

    def decode(self, responses: Tensor) -> list[str]:
        """Responses (..., T) as text, up to the first EOS, without special tokens."""
        flat = responses.reshape(-1, responses.shape[-1])
        mask = self.response_mask(flat)
        ids = [row[m].tolist() for row, m in zip(flat.cpu(), mask.cpu())]
        return self.tokenizer.batch_decode(ids, skip_special_tokens=True)

    def _warpers(self, temperature, top_k, top_p):
        from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

        hp = self.hparams
        temperature = float(hp.temperature if temperature is None else temperature)
        top_k = int(hp.top_k if top_k is None else top_k)
        top_p = float(hp.top_p if top_p is None else top_p)
        warpers = LogitsProcessorList()
        if temperature != 1.0:
            warpers.append(TemperatureLogitsWarper(temperature))
        if top_k > 0:
            warpers.append(TopKLogitsWarper(top_k))
        if top_p < 1.0:
            warpers.append(TopPLogitsWarper(top_p))
        return warpers

    def _encode_responses(self, responses: list[tuple[str, ...]]) -> Tensor:
        """Each game response as ids + EOS, right-padded (R, max_len + 1); every word must be one token."""
        rows = []
        for r in responses:
            ids = [self.tokenizer(w, add_special_tokens=False)["input_ids"] for w in r]
            if any(len(i) != 1 or i[0] == self.tokenizer.unk_token_id for i in ids):
                raise ValueError(
                    f"game response {r} is not one known token per word in the tokenizer of "
                    f"{self.hparams.model_path!r}: the exact distribution needs a word-level vocabulary"
                )
            rows.append([i[0] for i in ids] + [self.eos_id])
        L_ = max(len(r) for r in rows)
        return torch.tensor([r + [self.pad_id] * (L_ - len(r)) for r in rows], dtype=torch.long)

    # -- Lightning ----------------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        with in_step(self):
            loss = self.algorithm.sampled_step(self, batch["prompt"], bool(batch.get("new_round", True)))
        if is_logging_step(self.trainer):
            self.log("train/loss", loss)
        return loss

    def optimize(self, loss_of: Callable[[dict], Tensor], batch: dict[str, Tensor]) -> Tensor:
        """One optimizer step on a rollout batch: ``micro_batches`` backward passes over slices of its
        prompts, each loss weighted by its share of the prompts, then one step. Returns the batch loss."""
        opt = self.optimizers()
        opt.zero_grad()
        loss = check_finite(accumulate(loss_of, batch, self.hparams.micro_batches, self.manual_backward), "loss")
        check_gradients(p for p in self.model.parameters() if p.requires_grad)
        if self.hparams.grad_clip is not None:
            self.clip_gradients(opt, gradient_clip_val=self.hparams.grad_clip, gradient_clip_algorithm="norm")
        opt.step()
        if self.hparams.warmup_steps:
            self.lr_schedulers().step()
        return loss

    def configure_model(self) -> None:
        """Under ``ModelParallelStrategy`` (conf/trainer/fsdp.yaml): shard every transformer block, then the
        whole model, with FSDP2 over the data-parallel mesh. Snapshots become shards of the same layout."""
        mesh = self.device_mesh
        if mesh is None or self._sharded:
            return
        if self.lora:
            raise ValueError(
                "trainer=fsdp shards a fully fine-tuned policy; with LoRA use trainer=ddp (the adapters are small, "
                "the frozen base model is replicated), or policy.lora=null"
            )
        from torch.distributed.fsdp import fully_shard

        blocks = set(getattr(self.model, "_no_split_modules", None) or ())
        layers = [m for m in self.model.modules() if type(m).__name__ in blocks]
        if not layers:
            raise ValueError(f"{type(self.model).__name__} names no transformer block class (_no_split_modules) to shard")
        dp = mesh["data_parallel"] if mesh.mesh_dim_names and "data_parallel" in mesh.mesh_dim_names else mesh
        for layer in layers:
            fully_shard(layer, mesh=dp)
        fully_shard(self.model, mesh=dp)
        self._sharded = True
        for key in list(self.state_copies.keys()):  # not trained yet: every snapshot is the starting weights
            self.state_copies[key] = _StateCopy().copy_from(self.model)

    def on_fit_start(self) -> None:
        """The preference model runs where the policy runs, unless it was given a device of its own."""
        if isinstance(self.preference, nn.Module):
            self.preference.to(self.device)

    def configure_optimizers(self):
        hp = self.hparams
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = OPTIMIZERS[hp.optimizer](params, lr=hp.lr, weight_decay=hp.weight_decay)
        if not hp.warmup_steps:
            return optimizer
        # linear warmup over the first warmup_steps optimizer steps, then constant
        warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / hp.warmup_steps))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": warmup, "interval": "step"}}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Create the snapshots a checkpoint holds (adapters or state copies) so ``load_state_dict`` fills them."""
        state = checkpoint["state_dict"]
        for key, value in state.items():
            if self.lora:
                m = _LORA_KEY.search(key)
                if m:
                    self._new_adapter(_snapshot_name(m.group(1)))
            elif key.startswith("state_copies."):
                name, buf = key[len("state_copies."):].split(".", 1)
                if name not in self.state_copies:
                    self.state_copies[name] = _StateCopy().to(self.device)
                if buf not in self.state_copies[name]._buffers:
                    self.state_copies[name].register_buffer(buf, torch.empty_like(value, device=self.device))
        self._ref_exact = None
