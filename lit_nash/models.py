"""Tiny random-init causal LMs and word-level tokenizers, built offline.

The token-game task needs a real ``transformers`` causal LM whose every response is a short sequence of
whole-word tokens, so that its response distribution can be enumerated exactly. No hub is reachable, so
the model and its tokenizer are made here and saved with ``save_pretrained``; the policy then loads them
back exactly as it would load any pretrained model directory.
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

import torch

DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}
SPECIAL_TOKENS = {"pad_token": "[PAD]", "bos_token": "[BOS]", "eos_token": "[EOS]", "unk_token": "[UNK]"}
ARCHS = ("gpt2", "llama")
_WORD = re.compile(r"\w+|[^\w\s]+")  # what the Whitespace pre-tokenizer keeps as one piece


def build_tokenizer(words: Sequence[str]):
    """A word-level tokenizer: one token per word, so each response has exactly one tokenization.

    The specials come first ([PAD]=0, [BOS]=1, [EOS]=2, [UNK]=3); a [BOS] is prepended to every encoded
    text, so an empty prompt still gives the model a position to predict from.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

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


@contextmanager
def quiet_transformers():
    """transformers' own progress bars off ("Writing model shards" of ``save_pretrained``, "Loading weights"
    of ``from_pretrained``: a bar per tiny model, on stderr, in every token-game run); the hub's download bars
    (``huggingface_hub``) stay as they were, so a large download still shows its progress."""
    import huggingface_hub.utils as hub
    from transformers.utils import logging as hf_logging

    was_on, hub_was_off = hf_logging.is_progress_bar_enabled(), hub.are_progress_bars_disabled()
    hf_logging.disable_progress_bar()  # also turns the hub's off: turned back on below
    if not hub_was_off:
        hub.enable_progress_bars()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()
        if hub_was_off:
            hub.disable_progress_bars()


def _save(model, tokenizer, directory: str | Path) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with quiet_transformers():
        model.save_pretrained(directory)  # safetensors
    tokenizer.save_pretrained(directory)
    return directory


# -- checks shared by the policy and the text preference models (fail before training, fix in the message) --
def check_model_dir(path: str | Path, key: str) -> None:
    """A local model path (one that exists, or looks local: ``lit_nash.model_paths``) must be a readable
    saved-model directory; anything else is taken for a hub name, which ``from_pretrained`` reports itself."""
    from lit_nash.model_paths import missing_model

    p = Path(str(path)).expanduser()
    if not p.exists():
        if line := missing_model(str(path), key):
            raise FileNotFoundError(line)
        return
    if not p.is_dir():
        raise ValueError(f"{key}={str(path)!r} is a file; give the model's directory (the one holding config.json)")
    if not os.access(p, os.R_OK | os.X_OK):
        raise PermissionError(f"{key}={str(path)!r} is not readable; fix its permissions (chmod -R u+rX)")
    if not (p / "config.json").is_file() and not (p / "tokenizer_config.json").is_file():
        raise FileNotFoundError(f"{key}={str(path)!r} holds no config.json: not a saved model directory "
                                "(save the model there with save_pretrained)")


def resolve_pad_token(tokenizer, pad_token: str | None, key: str, where: str) -> int:
    """The id of the padding token: ``pad_token`` if set (it must be a token of the tokenizer, and becomes the
    tokenizer's pad token), else the tokenizer's own; a tokenizer without one fails, naming the key to set."""
    if pad_token is not None:
        pad_token = str(pad_token)
        ids = tokenizer.convert_tokens_to_ids([pad_token])
        unk = tokenizer.unk_token_id
        if not ids or ids[0] is None or (ids[0] == unk and pad_token != tokenizer.unk_token):
            eos = f" (its EOS token is {tokenizer.eos_token!r})" if tokenizer.eos_token is not None else ""
            raise ValueError(f"{key}={pad_token!r} is not a token of the tokenizer in {where!r}{eos}; "
                             "set it to a token of that vocabulary")
        tokenizer.pad_token = pad_token
        return int(ids[0])
    if tokenizer.pad_token_id is None:
        fix = f"{key}=<token>"
        if tokenizer.eos_token is not None:
            fix += f", e.g. {key}={tokenizer.eos_token!r} (its EOS token)"
        raise ValueError(f"the tokenizer in {where!r} has no pad token; set {fix}")
    return int(tokenizer.pad_token_id)


def check_vocab_fits(tokenizer, model, key: str, where: str, model_where: str) -> None:
    """Every id the tokenizer can emit must index a row of the model's input embedding."""
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    rows = getattr(emb, "num_embeddings", None)
    if rows is not None and len(tokenizer) > rows:
        raise ValueError(
            f"{key}: the tokenizer in {where!r} has {len(tokenizer)} tokens but the model in {model_where!r} has "
            f"{rows} embedding rows, so ids >= {rows} index past them; use the tokenizer the model was trained "
            "with (its own directory)"
        )


def context_length(config) -> int | None:
    """The positions a model's config declares (GPT-2's n_positions, Llama's max_position_embeddings, ...);
    None when it declares none."""
    for name in ("max_position_embeddings", "n_positions", "n_ctx", "max_seq_len", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def check_own_tokenizer(tokenizer, config, key: str, where: str, model_where: str, pad_given: bool = False) -> None:
    """A tokenizer given apart from its model (``preference.tokenizer_path``) must be the model's own: its BOS,
    EOS and PAD ids must be those the model's config declares. Another model's tokenizer of the same size passes
    ``check_vocab_fits`` and makes every id mean another word. PAD is not compared when the user chose it."""
    wrong = []
    for name in ("bos", "eos") + (() if pad_given else ("pad",)):
        declared = getattr(config, f"{name}_token_id", None)
        mine = getattr(tokenizer, f"{name}_token_id", None)
        if declared is None or mine is None:
            continue
        ids = list(declared) if isinstance(declared, (list, tuple)) else [declared]
        if mine not in ids:
            wrong.append(f"{name.upper()} is id {declared} in the model's config but {getattr(tokenizer, f'{name}_token')!r} "
                         f"= id {mine} in the tokenizer")
    if wrong:
        raise ValueError(f"{key} {where!r} is not the tokenizer of the model in {model_where!r}: {'; '.join(wrong)}. "
                         "Its ids would mean other words to the model, so the verdicts would be meaningless; use the "
                         "model's own tokenizer (leave the key unset: the model's folder, or the folder the model was "
                         "saved with)")


# -- loading pretrained models: the one path for the policy and the preference models ------------------------
def torch_dtype(name: str, key: str) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"{key} must be one of {list(DTYPES)}, got {name!r}")
    return DTYPES[name]


def load_tokenizer(path: str | Path, key: str, owner: str = "", trust_remote_code: bool = False):
    """``AutoTokenizer.from_pretrained(path)`` with an error that names the key and the fix."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:  # neither a local model directory nor a reachable hub model
        raise FileNotFoundError(f"{owner}{key} {str(path)!r}: no tokenizer found ({e}); give a model directory saved "
                                "with save_pretrained (model and tokenizer), or a hub name") from e


def load_pretrained(auto_class: str, path: str | Path, key: str, dtype: str = "float32", owner: str = "",
                    trust_remote_code: bool = False, new_weights: list[str] | None = None, **more):
    """``transformers.<auto_class>.from_pretrained(path, **more)`` from safetensors only, in ``dtype``; an error
    names the key and the fix. ``new_weights``, a list, receives the names of the weights the folder lacks, which
    ``from_pretrained`` initialized at random (its own report of them is not printed: the caller judges)."""
    import transformers
    from transformers.utils import logging as hf_logging

    try:
        with quiet_transformers():
            cls = getattr(transformers, auto_class)
            kwargs = dict(trust_remote_code=trust_remote_code, dtype=torch_dtype(dtype, key.rsplit(".", 1)[0] + ".dtype"),
                          **more)
            if new_weights is None:
                return cls.from_pretrained(str(path), use_safetensors=True, **kwargs)
            level = hf_logging.get_verbosity()
            hf_logging.set_verbosity_error()
            try:
                model, info = cls.from_pretrained(str(path), use_safetensors=True, output_loading_info=True, **kwargs)
            finally:
                hf_logging.set_verbosity(level)
            new_weights.extend(sorted(info.get("missing_keys") or ()))
            return model
    except OSError as e:  # a tokenizer but no (safetensors) weights
        raise FileNotFoundError(f"{owner}{key} {str(path)!r}: no model could be loaded ({e}); save the model there "
                                "with save_pretrained (safetensors)") from e
    except Exception as e:
        if type(e).__module__.split(".")[0] != "safetensors":
            raise
        raise ValueError(f"{owner}{key} {str(path)!r}: {corrupt_weights(path, e)}; save the model there again with "
                         "save_pretrained, or download it again") from e


def corrupt_weights(path: str | Path, error: Exception) -> str:
    """Which ``*.safetensors`` file of a model folder cannot be read, and why (safetensors' own error names no
    file): "the weights file '<file>' is corrupt or truncated (<error>)"."""
    from safetensors import safe_open

    for file in sorted(Path(str(path)).expanduser().glob("*.safetensors")):
        try:
            with safe_open(str(file), framework="pt") as f:
                for name in f.keys():
                    f.get_slice(name)
        except Exception as e:
            return f"the weights file {str(file)!r} is corrupt or truncated ({e})"
    return f"a weights file is corrupt or truncated ({error})"
