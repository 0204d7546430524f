"""Base of the text preference models: a pretrained ``transformers`` model judging two text responses.

A text preference model owns **its own** model and tokenizer, loaded by path (never the policy's objects),
renders each comparison with **its own** template (optionally wrapped in its tokenizer's chat template), and
answers ``prob_text(prompts, a, b)`` → P(a ≻ b | prompt), a float32 CPU tensor of shape (n,), with all n
pairs scored in batched forwards of ``batch_size`` sequences.

In training and evaluation the rollout (``lit_nash.rollout.label``) decodes the policy's responses to text
with the policy's tokenizer, once per sample, and hands the text over: the model judges the text the
policy wrote, re-encoded with the judge's own tokenizer and template, and never calls into the policy.
The model may live on its own device
(``device``), in which case moving the LightningModule (the Trainer does) leaves it where it was put.

The model is a frozen judge: parameters do not require grad, and it is run in eval mode under no_grad.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Iterable, Sequence

import lightning as L
import torch
from torch import Tensor

from lit_nash.validate import integer
from lit_nash.models import (check_model_dir, check_own_tokenizer, check_vocab_fits, context_length, load_pretrained,
                             load_tokenizer, resolve_pad_token, torch_dtype)



def template_fields(template: str) -> set[str]:
    """The ``{name}`` placeholders of a str.format template."""
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


class TextPreference(L.LightningModule):
    """P(a ≻ b | prompt) for text responses from a pretrained model directory; subclasses define the scoring.

    Subclasses set ``auto_class`` (the ``transformers`` Auto class name), ``default_template``, and
    ``template_fields_required`` (the placeholders the template must use), and implement ``_prob``.
    """

    auto_class = "AutoModelForSequenceClassification"
    default_template = "{prompt} {a} {b}"
    template_fields_required: tuple[set[str], ...] = ({"a", "b"},)  # any one of these sets, plus optional prompt

    def __init__(
        self,
        path: str | Path,
        tokenizer_path: str | Path | None = None,
        template: str | None = None,
        use_chat_template: bool = False,
        batch_size: int = 16,
        max_length: int | None = None,
        device: str | None = None,
        dtype: str = "float32",
        trust_remote_code: bool = False,
        pad_token: str | None = None,
        model_kwargs: dict | None = None,  # more from_pretrained keywords: a new head's num_labels (GPM training)
        *,
        allow_new_weights: bool = False,
    ):
        """``allow_new_weights``: accept a model folder that lacks some weights (a base model whose head
        ``from_pretrained`` initializes at random): only ``train_preference``, which trains that head, does."""
        super().__init__()
        integer("preference.batch_size", batch_size, 1)
        if max_length is not None and max_length < 1:
            raise ValueError(f"preference.max_length must be ≥ 1 or null, got {max_length}")
        torch_dtype(dtype, "preference.dtype")
        path = Path(path)
        tokenizer_path = path if tokenizer_path is None else Path(tokenizer_path)
        for key, p in (("path", path), ("tokenizer_path", tokenizer_path)):
            if not p.exists():
                raise FileNotFoundError(f"{type(self).__name__}: preference.{key} {str(p)!r} does not exist; give "
                                        "the directory the model was saved to with save_pretrained")
            check_model_dir(p, f"preference.{key}")
        self.template = self.default_template if template is None else str(template)
        fields = template_fields(self.template)
        allowed = set().union(*self.template_fields_required) | {"prompt"}
        if fields - allowed or not any(req <= fields for req in self.template_fields_required):
            need = " or ".join("{" + "}, {".join(sorted(r)) + "}" for r in self.template_fields_required)
            raise ValueError(
                f"{type(self).__name__}: template {self.template!r} must use {need} (and optionally {{prompt}}), "
                f"found {sorted(fields)}"
            )
        self.save_hyperparameters(logger=False)
        self.path = path
        self.batch_size = int(batch_size)
        self.max_length = max_length
        self.use_chat_template = bool(use_chat_template)

        # its own tokenizer object, loaded from disk: never shared with the policy
        owner = f"{type(self).__name__}: "
        self.tokenizer = load_tokenizer(tokenizer_path, "preference.tokenizer_path", owner, trust_remote_code)
        resolve_pad_token(self.tokenizer, pad_token, "preference.pad_token", str(tokenizer_path))
        new_weights: list[str] = []
        model = load_pretrained(self.auto_class, path, "preference.path", dtype, owner, trust_remote_code, new_weights,
                                **(model_kwargs or {}))
        if new_weights and not allow_new_weights:
            raise ValueError(untrained(owner, path, new_weights))
        check_vocab_fits(self.tokenizer, model, f"{type(self).__name__}: preference.tokenizer_path",
                         str(tokenizer_path), str(path))
        if tokenizer_path.resolve() != path.resolve():  # another folder's tokenizer must still be the model's own
            check_own_tokenizer(self.tokenizer, model.config, f"{owner}preference.tokenizer_path", str(tokenizer_path),
                                str(path), pad_given=pad_token is not None)
        self.positions = context_length(model.config)  # None: the config declares no limit
        if getattr(model.config, "pad_token_id", None) is None:
            model.config.pad_token_id = self.tokenizer.pad_token_id
        model.requires_grad_(False)
        self.model = model.eval()
        self._pinned = torch.device(device) if device is not None else None
        if self._pinned is not None:
            self.model.to(self._pinned)

    # -- device -------------------------------------------------------------------------------------------
    def _apply(self, fn, *args, **kwargs):
        """Module moves (``.to``, ``.cuda``, the Trainer's) leave a pinned model on its own device."""
        out = super()._apply(fn, *args, **kwargs)
        pinned = getattr(self, "_pinned", None)
        if pinned is not None and "model" in self._modules:
            self._modules["model"].to(pinned)
        return out

    @property
    def model_device(self) -> torch.device:
        """Where the preference model runs: ``device`` if given, else wherever the module is."""
        return next(self.model.parameters()).device

    # -- text -----------------------------------------------------------------------------------------------
    def render(self, prompt: str, **responses: str) -> str:
        """The model input for one comparison: the template filled in, wrapped in the chat template if asked."""
        text = self.template.format(prompt=prompt, **responses)
        if self.use_chat_template and getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
            )
        return text

    def encode(self, texts: Sequence[str]) -> dict[str, Tensor]:
        """Right-padded ids and attention mask of a chunk of texts, on the model's device."""
        chat = self.use_chat_template and getattr(self.tokenizer, "chat_template", None)
        enc = self.tokenizer(
            list(texts),
            padding=True,
            padding_side="right",
            truncation=self.max_length is not None,
            truncation_side="left",  # keep the end, where the verdict / last token is read
            max_length=self.max_length,
            add_special_tokens=not chat,  # a chat template carries its own specials
            return_tensors="pt",
        )
        if self.max_length is None and self.positions is not None and enc["input_ids"].shape[1] > self.positions:
            raise ValueError(self._too_long(enc["input_ids"].shape[1], "a comparison of this step"))
        return {k: enc[k].to(self.model_device) for k in ("input_ids", "attention_mask")}

    def _too_long(self, need: int, what: str) -> str:
        return (f"{type(self).__name__}: {what} needs {need} positions of the preference model, but the model in "
                f"{str(self.path)!r} has {self.positions} (max_position_embeddings); set preference.max_length="
                f"{self.positions} to keep each comparison's last {self.positions} tokens (the responses and the end "
                "of the prompt)")

    def check_context(self, prompts: Sequence[str], response_tokens: int) -> None:
        """At start-up: every prompt, with responses of ``response_tokens`` tokens in each of the template's
        response places, must fit the model's positions (or a position embedding is indexed past its end when
        the first long comparison comes). A response's length is counted in the policy's tokens, one of the
        judge's each: an estimate, so ``encode`` checks every batch too. ``max_length`` truncates to fit."""
        if self.positions is None:
            return
        if self.max_length is not None:
            if self.max_length > self.positions:
                raise ValueError(f"{type(self).__name__}: preference.max_length={self.max_length} is beyond the "
                                 f"{self.positions} positions of the model in {str(self.path)!r}; set it to at most "
                                 f"{self.positions}")
            return
        places = set().union(*self.template_fields_required)
        chat = self.use_chat_template and getattr(self.tokenizer, "chat_template", None)
        longest, at = 0, 0
        for i, prompt in enumerate(prompts):
            text = self.render(prompt, **{name: "" for name in places})
            n = len(self.tokenizer(text, add_special_tokens=not chat)["input_ids"])
            if n > longest:
                longest, at = n, i
        need = longest + len(places) * int(response_tokens)
        if need > self.positions:
            shown = repr(prompts[at][:60]) + ("..." if len(prompts[at]) > 60 else "")
            raise ValueError(self._too_long(need, f"prompt {at} ({shown}) with {len(places)} response(s) of up to "
                                            f"policy.max_new_tokens={response_tokens} tokens"))

    def chunks(self, texts: Sequence[str]) -> Iterable[tuple[Sequence[str], dict[str, Tensor]]]:
        for i in range(0, len(texts), self.batch_size):
            part = texts[i : i + self.batch_size]
            yield part, self.encode(part)

    # -- interface -----------------------------------------------------------------------------------------
    def prob_text(self, prompts: Sequence[str], a: Sequence[str], b: Sequence[str]) -> Tensor:
        """P(a[i] ≻ b[i] | prompts[i]) for n text triples → float32 CPU tensor (n,), finite and in [0, 1]."""
        prompts, a, b = list(prompts), list(a), list(b)
        if not len(prompts) == len(a) == len(b):
            raise ValueError(f"prob_text needs as many prompts as responses, got {len(prompts)}, {len(a)}, {len(b)}")
        if not prompts:
            return torch.zeros(0, dtype=torch.float32)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                p = self._prob(prompts, a, b)
        finally:
            self.model.train(was_training)
        return p.detach().to("cpu", torch.float32)  # not clamped: a value outside [0, 1] is the model's bug, refused by check_probabilities

    def forward(self, prompts: Sequence[str], a: Sequence[str], b: Sequence[str]) -> Tensor:
        return self.prob_text(prompts, a, b)

    def _prob(self, prompts: list[str], a: list[str], b: list[str]) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


def untrained(owner: str, path: Path, new_weights: list[str]) -> str:
    """The refusal of a preference model folder whose weights lack some the model needs (a bare encoder or base
    LM: its classification head would be random, and the policy would train against noise)."""
    shown = ", ".join(new_weights[:4]) + (f" and {len(new_weights) - 4} more" if len(new_weights) > 4 else "")
    return (f"{owner}preference.path {str(path)!r} is not a trained preference model: it has no {shown}, which would "
            f"be initialized at random (a base model, not a classifier), so its verdicts would be noise. Train one from "
            f"it: python -m lit_nash train_preference model_path={path} data.path=<pairs.jsonl>, then give "
            "preference.path=<its save_dir>")


def first_wins(logits: Tensor, label: int = 0) -> Tensor:
    """P(first ≻ second) from a sequence classifier's logits (B, num_labels) in float64: softmax[label] over
    2+ labels, or the sigmoid of a single logit."""
    logits = logits.double()
    if logits.shape[-1] == 1:
        return torch.sigmoid(logits[:, 0])
    return torch.softmax(logits, dim=-1)[:, label]
