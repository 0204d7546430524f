"""Tiny random-init causal LMs and word-level tokenizers, built offline.

The token-game task needs a real ``transformers`` causal LM whose every response is a short sequence of
whole-word tokens, so that its response distribution can be enumerated exactly. No hub is reachable, so
the model and its tokenizer are made here and saved with ``save_pretrained``; the policy then loads them
back exactly as it would load any pretrained model directory.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = {"pad_token": "[PAD]", "bos_token": "[BOS]", "eos_token": "[EOS]", "unk_token": "[UNK]"}
ARCHS = ("gpt2", "llama")
_WORD = re.compile(r"\w+|[^\w\s]+")  # what the Whitespace pre-tokenizer keeps as one piece


def build_tokenizer(words: Sequence[str]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer: one token per word, so each response has exactly one tokenization.

    The specials come first ([PAD]=0, [BOS]=1, [EOS]=2, [UNK]=3); a [BOS] is prepended to every encoded
    text, so an empty prompt still gives the model a position to predict from.
    """
    words = list(dict.fromkeys(words))  # dedupe, keep order
    specials = list(SPECIAL_TOKENS.values())
    for w in words:
        if not _WORD.fullmatch(w):
            raise ValueError(f"tokenizer word {w!r} must be one whitespace pre-token (letters/digits, or punctuation)")
        if w in specials:
            raise ValueError(f"tokenizer word {w!r} clashes with a special token")
    vocab = {tok: i for i, tok in enumerate(specials + words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    bos = SPECIAL_TOKENS["bos_token"]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, vocab[bos])]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)


def tiny_causal_lm(
    directory: str | Path,
    words: Sequence[str],
    arch: str = "gpt2",
    n_layer: int = 2,
    n_embd: int = 64,
    n_head: int = 2,
    max_positions: int = 64,
    seed: int = 0,
) -> Path:
    """Build a random-init GPT-2 or Llama over ``build_tokenizer(words)``, save model and tokenizer, return the dir.

    Dropout is off: the NLHF losses compare log-probs computed while sampling with log-probs computed in
    training, which must be the same function. The seed is applied in a forked RNG, so building a model does
    not move the caller's random stream.
    """
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {list(ARCHS)}, got {arch!r}")
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer(words)
    ids = _token_ids(tokenizer)
    if arch == "gpt2":
        config = GPT2Config(
            n_positions=max_positions, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **ids,
        )
        cls = GPT2LMHeadModel
    else:
        config = LlamaConfig(
            hidden_size=n_embd, intermediate_size=4 * n_embd, num_hidden_layers=n_layer,
            num_attention_heads=n_head, num_key_value_heads=n_head, max_position_embeddings=max_positions,
            attention_dropout=0.0, **ids,
        )
        cls = LlamaForCausalLM
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(config)
    return _save(model, tokenizer, directory)


def tiny_sequence_classifier(
    directory: str | Path,
    words: Sequence[str],
    num_labels: int = 2,
    seed: int = 0,
    n_layer: int = 2,
    n_embd: int = 64,
    n_head: int = 2,
    max_positions: int = 128,
) -> Path:
    """A random-init ``GPT2ForSequenceClassification`` over ``build_tokenizer(words)``, saved: the pairwise
    classifier (num_labels=2: "first wins", "second wins") or a Bradley–Terry reward model (num_labels=1).
    PAD is set (the head pools the last non-PAD token); dropout off and a forked RNG, as ``tiny_causal_lm``.
    """
    if num_labels < 1:
        raise ValueError(f"num_labels must be ≥ 1, got {num_labels}")
    from transformers import GPT2Config, GPT2ForSequenceClassification

    tokenizer = build_tokenizer(words)
    config = GPT2Config(
        n_positions=max_positions, n_embd=n_embd, n_layer=n_layer, n_head=n_head, resid_pdrop=0.0,
        embd_pdrop=0.0, attn_pdrop=0.0, summary_first_dropout=0.0, num_labels=num_labels, **_token_ids(tokenizer),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2ForSequenceClassification(config)
        # a random head on a random trunk gives near-equal logits; widen it so a test sees real preferences
        with torch.no_grad():
            model.score.weight.normal_(0.0, 0.3)
    return _save(model, tokenizer, directory)


def _token_ids(tokenizer) -> dict[str, int]:
    """The vocabulary size and special ids a model config needs (all inside the vocabulary)."""
    return dict(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)


def _save(model, tokenizer, directory: str | Path) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)  # safetensors
    tokenizer.save_pretrained(directory)
    return directory
