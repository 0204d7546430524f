"""A ``transformers`` causal LM as a policy network, optionally with LoRA adapters (peft).

It loads the model (``lit_nash.models``), scores responses (``response_log_probs``: one batched forward,
sum or per-token mean over the tokens up to the first EOS), runs a forward *as a source*
(``forward_as``: the policy, a snapshot, the reference), and on a ``TokenGame`` computes its exact
distribution over the game's actions (``log_probs``), so the exact game metrics work unchanged.
Sampling is not here: ``lit_nash.generation`` holds the generators that decode from this network.

Snapshots (``lit_nash.policy.snapshots``) copy what the optimizer trains: with LoRA only the adapter
(``ref`` is the base model, adapters disabled: the trainable adapter starts at B = 0), without LoRA every
parameter. A snapshot is evaluated with ``torch.func.functional_call`` over the copied tensors, or under
FSDP2 (whose hooks gather the module's own parameters) by copying it into the parameters and back.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import Tensor, nn
from torch.func import functional_call

from lit_nash.guards import check_finite
from lit_nash.models import (check_model_dir, check_vocab_fits, context_length, load_pretrained, load_tokenizer,
                             resolve_pad_token)
from lit_nash.policy.base_model import BaseModelRef, leave_out_frozen
from lit_nash.policy.chunked_head import CHUNK_BYTES, chunk_rows, returns_head_output, scoring_head
from lit_nash.policy.network import SnapshotMixin
from lit_nash.policy.prompts import PromptCodec
from lit_nash.policy.snapshots import PREFIX, Snapshots, _name
from lit_nash.validate import in_unit_interval, integer, positive

TINY = 1e-12  # floor of the invalid action's probability, so its log stays finite
REDUCTIONS = ("sum", "mean")


def _plain(config: Any) -> dict:
    """A Hydra DictConfig (whose lists are not ``list``s, which peft checks for) as plain Python."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(config) if OmegaConf.is_config(config) else dict(config)


def _lora_config(lora: Any, model: nn.Module) -> dict:
    """peft ``LoraConfig`` keywords, plain Python, with ``fan_in_fan_out`` following the model unless given:
    true when it has ``transformers``' ``Conv1D`` layers (GPT-2 stores them transposed), false for
    ``nn.Linear`` models (Llama and most others). peft would flip a wrong value itself, with a warning per run."""
    from transformers.pytorch_utils import Conv1D

    config = _plain(lora)
    if "fan_in_fan_out" not in config:
        config["fan_in_fan_out"] = any(isinstance(m, Conv1D) for m in model.modules())
    return config


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


def _contiguous_head_input(model: nn.Module) -> None:
    """The output head reads a contiguous input. Decoding keeps only the last position's hidden state (a strided
    view at the prompt's step), and torch.matmul does not fold a non-contiguous 3-D input into one matrix
    product: it expands the (vocabulary x width) head weight to every row and copies it, a 16 x 49152 x 576
    tensor (0.9 GB in bf16) and 2.7 s of a 9.6 s bf16 LoRA decode of SmolLM2 on this CPU."""
    head = model.get_output_embeddings()
    if head is not None:
        head.register_forward_pre_hook(lambda module, args: (args[0].contiguous(), *args[1:]) if args else None)


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def parameters_at_rest(model: nn.Module) -> dict[str, nn.Parameter]:
    """The model's parameters by name, sharded if it is sharded: FSDP2 leaves the root module's parameters
    gathered after a forward, and copies to or from snapshots must see one layout."""
    from torch.distributed.fsdp import FSDPModule

    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()
    return dict(model.named_parameters())

class CausalLMPolicy(SnapshotMixin, nn.Module):
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
        game: Any = None,
        gradient_checkpointing: bool = False,
    ):
        """``temperature``, ``top_k``, ``top_p`` and ``max_new_tokens`` are the policy's own sampling settings,
        which a generator uses unless an algorithm's sampling group sets its own."""
        super().__init__()
        self.max_new_tokens = integer("policy.max_new_tokens", max_new_tokens, 1)
        if max_prompt_tokens is not None:
            integer("policy.max_prompt_tokens", max_prompt_tokens, 1)
        self.temperature = positive("policy.temperature", temperature)
        self.top_k = integer("policy.top_k", top_k, 0, "0 = off")
        self.top_p = in_unit_interval("policy.top_p", top_p, open_left=True, note=" (1.0 = off)")
        check_model_dir(model_path, "policy.model_path")
        if prompts is None:
            if game is None:
                raise ValueError("CausalLMPolicy needs prompts, or a game to take them from")
            prompts = list(game.prompts)
        elif game is not None and list(prompts) != list(game.prompts):
            raise ValueError(f"policy prompts {list(prompts)} differ from the game's {list(game.prompts)}")
        self.model_path = str(model_path)
        self.tokenizer = load_tokenizer(model_path, "policy.model_path", trust_remote_code=trust_remote_code)
        if self.tokenizer.eos_token_id is None:
            raise ValueError(f"the tokenizer in {str(model_path)!r} has no EOS token")
        self.eos_id = self.tokenizer.eos_token_id
        self.pad_id = resolve_pad_token(self.tokenizer, pad_token, "policy.pad_token", str(model_path))
        model = load_pretrained("AutoModelForCausalLM", model_path, "policy.model_path", dtype,
                                trust_remote_code=trust_remote_code)
        check_vocab_fits(self.tokenizer, model, "policy.model_path", str(model_path), str(model_path))
        self.gradient_checkpointing = bool(gradient_checkpointing)
        if self.gradient_checkpointing:  # activations recomputed in backward: memory for time (forward_as below)
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.lora = bool(lora)
        if self.lora:
            from peft import LoraConfig, get_peft_model

            with warnings.catch_warnings():  # peft calls a transformers method deprecated in v5; not ours to fix
                warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
                model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", **_lora_config(lora, model)))
        if self.lora:  # checkpoints hold the adapters and name the base model (path, content hash)
            self.base_model = BaseModelRef(model_path)
            leave_out_frozen(self)
        _contiguous_head_input(model)
        _disable_dropout(model)  # LoRA's dropout too
        self.model = model.train()  # from_pretrained leaves eval mode; without dropout the two modes agree
        self.chunked_head = returns_head_output(model)  # log-probs without every position's logits at once
        self.logit_chunk_bytes = CHUNK_BYTES
        self.codec = PromptCodec(self.tokenizer, prompts, use_chat_template, max_prompt_tokens, self.pad_id,
                                 f"policy.model_path {str(model_path)!r}")
        self.prompts = self.codec.prompts
        self.codec.check_context(context_length(model.config), self.max_new_tokens)
        self.sharded = False  # set by shard() under FSDP2
        self.snapshots = Snapshots()
        if not self.lora:
            self.refresh_snapshot("ref")  # the starting weights (with LoRA, "ref" = adapters disabled)
        self.game = game
        if game is not None:
            self.register_buffer("response_ids", self.codec.encode_responses(game.responses), persistent=False)
        self._ref_exact: Tensor | None = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def num_prompts(self) -> int:
        return len(self.prompts)

    # -- text ------------------------------------------------------------------------------------------
    def prompt_text(self, i: int) -> str:
        return self.codec.prompt_text(i)

    def decode(self, responses: Tensor) -> list[str]:
        return self.codec.decode(responses)

    def response_mask(self, responses: Tensor) -> Tensor:
        return self.codec.response_mask(responses)

    # -- PolicyNetwork ----------------------------------------------------------------------------------
    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in parameters_at_rest(self.model).values() if p.requires_grad]

    def trainable_state(self) -> dict[str, Tensor]:
        params = parameters_at_rest(self.model)
        return {n: p.detach() for n, p in params.items() if p.requires_grad or not self.lora}

    @torch.no_grad()
    def load_trainable_state(self, tensors: dict[str, Tensor]) -> None:
        params = parameters_at_rest(self.model)
        for name, value in tensors.items():
            params[name].copy_(value)

    def has_snapshot(self, name: str) -> bool:
        return (name == "ref" and self.lora) or super().has_snapshot(name)

    def snapshot_names(self) -> list[str]:
        return sorted({"ref"} | set(self.snapshots.names())) if self.lora else self.snapshots.names()

    def restore_snapshot(self, name: str) -> None:
        if name == "ref" and self.lora:
            raise ValueError("snapshot 'ref' is the base model (adapters disabled); it cannot be restored")
        if name not in self.snapshots:
            raise KeyError(f"no snapshot {name!r}; taken so far: {self.snapshot_names()}")
        super().restore_snapshot(name)

    def snapshot_changed(self, name: str) -> None:
        if name == "ref":
            self._ref_exact = None

    def check_source(self, source: str) -> None:
        if source not in ("policy", "mixture") and (not self.has_snapshot(source) or self.snapshots.ring(source)):
            raise KeyError(f"no snapshot {source!r}; taken so far: {self.snapshot_names()}")

    def components(self, source: str, mixture_coef: float = 0.0) -> list[tuple[str, float]]:
        """The models whose next-token logits a source sums, with weights: the mixture is (1−α)·policy + α·ref."""
        if source == "mixture":
            c = float(mixture_coef)
            if not 0.0 <= c <= 1.0:
                raise ValueError(f"mixture_coef must lie in [0, 1], got {c}")
            return [("policy", 1.0 - c), ("ref", c)]
        self.check_source(source)
        return [(source, 1.0)]

    @contextmanager
    def decoding(self) -> Iterator[None]:
        """Decoding, without grad: a LoRA adapter kept in fp32 over a bf16 or fp16 base (peft's default) runs in
        the base's dtype, so that no linear layer casts its input up and its output back: 16% of a bf16 LoRA
        decode of SmolLM2 on this CPU (6.6 → 5.5 s, docs/performance.md). Losses never see this: they
        recompute log-probs with the fp32 adapter, and the mismatch is the one ``train/generator_logprob_gap``
        reports for any generator."""
        base = next((p.dtype for p in self.model.parameters() if not p.requires_grad), None)
        adapter = [p for p in self.model.parameters() if p.requires_grad] if self.lora and not self.sharded else []
        adapter = [p for p in adapter if base is not None and p.dtype != base]
        kept = [p.data for p in adapter]
        try:
            for p in adapter:
                p.data = p.data.to(base)
            yield
        finally:
            for p, data in zip(adapter, kept):
                p.data = data

    def forward_as(self, source: str, **kwargs):
        """One forward of the model as ``source``: the policy, the base model (LoRA's ref), or a snapshot."""
        if self.gradient_checkpointing and not torch.is_grad_enabled():
            # transformers checkpoints in train mode and then drops the KV cache: a no-grad forward (decoding,
            # log-probs of a frozen source) runs in eval mode, the same function here since dropout is off
            with _eval_mode(self.model):
                return self._forward_as(source, **kwargs)
        return self._forward_as(source, **kwargs)

    def _forward_as(self, source: str, **kwargs):
        if source == "policy":
            return self.model(**kwargs)
        if self.lora and source == "ref":
            with self.model.disable_adapter():
                return self.model(**kwargs)
        tensors = self.snapshots[source]
        if self.sharded:  # FSDP's hooks gather the module's own parameters: put the snapshot in them
            with _swapped(self.model, tensors):
                return self.model(**kwargs)
        return functional_call(self.model, tensors, args=(), kwargs=kwargs)

    def response_log_probs(self, prompt: Tensor, responses: Tensor, source: str = "policy", reduction: str = "sum",
                           mixture_coef: float = 0.0) -> Tensor:
        """log π(y | x) (N, k) of responses (N, k, T), over the tokens up to and including the first EOS.

        ``mean`` is the per-token mean. One batched forward; with grad only for the current policy.
        """
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
        N, k, T = responses.shape
        sources = self.components(source, mixture_coef)
        ids, mask = self.codec.prompt_batch(prompt, k, self.device)
        resp = responses.reshape(N * k, T).to(ids.device)
        rmask = self.response_mask(resp)
        full, fmask = torch.cat([ids, resp], -1), torch.cat([mask, rmask.long()], -1)
        inputs = dict(input_ids=full, attention_mask=fmask, position_ids=(fmask.cumsum(-1) - 1).clamp(min=0),
                      logits_to_keep=T + 1)
        with torch.set_grad_enabled(torch.is_grad_enabled() and source == "policy"):
            if self.chunked_head and len(sources) == 1:  # the mixture sums logits: the plain path
                out = self._chunked_log_probs(source, inputs, resp, rmask)
            else:
                logits = sum(w * self.forward_as(name, **inputs).logits[:, :-1].float() for name, w in sources)
                out = (logits.log_softmax(-1).gather(-1, resp[..., None]).squeeze(-1) * rmask).sum(-1)
            if reduction == "mean":
                out = out / rmask.sum(-1).clamp(min=1)
        return check_finite(out, f"log-probs of {source!r}").view(N, k)

    def _chunked_log_probs(self, source: str, inputs: dict, resp: Tensor, rmask: Tensor) -> Tensor:
        """Summed log-probs (N·k,) of the scored response tokens (``rmask``), the head and log-softmax run a
        chunk of positions at a time inside the forward (``lit_nash.policy.chunked_head``)."""
        head = self.model.get_output_embeddings()
        positions = torch.cat([rmask, torch.zeros_like(rmask[:, :1])], -1)  # position t predicts token t + 1
        rows = chunk_rows(head.weight.shape[0], self.logit_chunk_bytes)
        with scoring_head(head, positions, resp[rmask], rows) as found:
            self.forward_as(source, **inputs)
        (lp,) = found
        row = rmask.nonzero()[:, 0]
        return torch.zeros(resp.shape[0], dtype=lp.dtype, device=lp.device).index_add(0, row, lp)

    def scoring_bytes(self, prompt: Tensor, responses: Tensor) -> Tensor:
        """(N,): an estimate of the memory that scoring each prompt row's responses (N, m, T) with grad takes,
        forward and backward (``policy.micro_batches=auto`` packs rows into its budget by it). Each of the m
        sequences has L = P + T positions, P the step's longest prompt; with b bytes per element of the
        model's dtype, V the vocabulary, H the hidden size, A heads and n layers, a sequence takes
        * at the head, (T + 1)·V·(b + 12) bytes: the logits, their fp32 copy and log-softmax kept for backward,
          and a gradient of each; none with the chunked head (``chunked_head``), which keeps one chunk of
          positions at a time and recomputes it in backward;
        * in the blocks, n·L·b·(34·H + 2·A·L) bytes of activations kept for backward: about 34 values per hidden
          unit and token in a transformer layer (Korthikanti et al. 2022, "Reducing activation recomputation"),
          plus the attention scores and probabilities where the kernel keeps them; with gradient checkpointing
          (n + 2)·L·H·b for the layer inputs and the gradients at a layer's boundary, plus the one layer
          recomputed.
        Parameters, gradients and optimizer state are there whatever the split and are not counted."""
        config, b = self.model.config, torch.finfo(next(self.model.parameters()).dtype).bits // 8
        H, n = config.hidden_size, config.num_hidden_layers
        A, V = config.num_attention_heads, config.vocab_size
        T = responses.shape[-1]
        L = max(len(self.codec.prompt_tokens(i)) for i in prompt.tolist()) + T
        layer = L * b * (34 * H + 2 * A * L)
        blocks = (n + 2) * L * H * b + layer if self.gradient_checkpointing else n * layer
        head = 0 if self.chunked_head else (T + 1) * V * (b + 12)
        per_sequence = head + blocks
        return torch.full((len(prompt),), float(per_sequence * responses.shape[1]))

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
        ring = self.snapshots.ring(name)
        if ring:
            return torch.stack([self.log_probs(f"{name}/{i}") for i in range(ring)])
        return self.log_probs(name)

    def invalid_mass(self) -> float:
        """Mean over prompts of the probability of emitting anything that is not a game response."""
        return float(self.log_probs()[:, -1].exp().mean())

    # -- scale-out and checkpoints ------------------------------------------------------------------------
    def shard(self, mesh) -> None:
        """FSDP2: shard every transformer block, then the whole model, over the data-parallel mesh.
        Snapshots become shards of the same layout."""
        if self.sharded:
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
        self.sharded = True
        for name in self.snapshots.names():  # not trained yet: every snapshot is the starting weights
            self.snapshots.entries.pop(name.replace("/", "__"))
            self.snapshots.take(name, self.trainable_state())

    def register_checkpoint(self, state_dict: dict[str, Tensor], prefix: str = "") -> None:
        """Create the snapshots a checkpoint's state dict holds, so ``load_state_dict`` fills them. Sharded, the
        shards load into existing buffers of the weights' layout: given the checkpoint's keys (its values are
        still on disk), each missing snapshot starts as a shard-sized copy of the weights, which the load
        overwrites."""
        if self.sharded:
            head = prefix + PREFIX + "entries."
            for name in sorted({_name(k[len(head):].split(".", 1)[0]) for k in state_dict if k.startswith(head)}):
                if name not in self.snapshots:
                    self.snapshots.take(name, self.trainable_state())
        else:
            self.snapshots.register_from_state_dict(state_dict, prefix + PREFIX, self.device)
        self._ref_exact = None
