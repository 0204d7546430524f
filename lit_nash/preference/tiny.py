"""Tiny random-init sequence classifiers over a word-level tokenizer, built offline (for tests and demos).

The counterpart of ``lit_nash.models.tiny_causal_lm`` for the pairwise classifier (num_labels=2: logits of
"first wins", "second wins") and the Bradley–Terry reward model (num_labels=1): a GPT-2 with a
classification head, PAD id set (it pools the last non-PAD token), saved with ``save_pretrained``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from lit_nash.models import build_tokenizer


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
    """Build a random-init ``GPT2ForSequenceClassification`` over ``build_tokenizer(words)``, save, return the dir.

    Dropout is off, and the seed is applied in a forked RNG, so building does not move the caller's stream.
    """
    if num_labels < 1:
        raise ValueError(f"num_labels must be ≥ 1, got {num_labels}")
    from transformers import GPT2Config, GPT2ForSequenceClassification

    tokenizer = build_tokenizer(words)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=max_positions, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, summary_first_dropout=0.0, num_labels=num_labels,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2ForSequenceClassification(config)
        # a random head on a random trunk gives near-equal logits; widen it so tests see real preferences
        with torch.no_grad():
            model.score.weight.normal_(0.0, 0.3)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
