"""The base model of a LoRA run, named by path and content hash instead of stored.

A LoRA run trains its adapters and never changes its base model, so its checkpoints hold the adapters, the
optimizer state, the snapshots (adapters too) and the run state, and name the base model as
``{"path": ..., "sha256": ...}``: the folder it was loaded from and the hash of the files that make the model
(``content_hash``). A resume, ``eval`` and ``export`` load the base model from that folder and check the hash
first (``check``), so a checkpoint is never put on top of another model. A base model that moved is found again
by naming its new folder (``policy.model_path=<folder>`` on resume): accepted when its hash matches.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from torch import nn

# the files that make a model folder: weights, config, tokenizer and chat template (a README or a cache is not)
MODEL_FILES = (".safetensors", ".json", ".txt", ".jinja", ".model")
_cache: dict[tuple, str] = {}


def content_hash(folder: str | Path) -> str:
    """sha256 over the model files of ``folder`` (top level: name and bytes, in name order). A copy of the folder
    elsewhere has the same hash; another model, or the same model re-saved in another dtype, has another.
    Cached per process by the files' sizes and modification times (hashing SmolLM2's 517 MB takes about 1 s)."""
    root = Path(folder).expanduser().resolve()
    files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix in MODEL_FILES)
    key = (str(root), tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files))
    if key not in _cache:
        h = hashlib.sha256()
        for p in files:
            h.update(p.name.encode() + b"\0")
            with open(p, "rb") as f:
                while block := f.read(1 << 24):
                    h.update(block)
        _cache[key] = h.hexdigest()
    return _cache[key]


def describe(folder: str | Path) -> dict[str, str]:
    """The record a LoRA checkpoint keeps of its base model: its folder (absolute) and content hash."""
    return {"path": str(Path(folder).expanduser().resolve()), "sha256": content_hash(folder)}


def recorded(checkpoint: dict[str, Any]) -> dict[str, str] | None:
    """The base model a checkpoint names (a LoRA run's), or None (a full fine-tune holds its whole model)."""
    for key, value in (checkpoint.get("state_dict") or {}).items():
        if key.endswith("_extra_state") and isinstance(value, dict) and value.get("base_model"):
            return value["base_model"]
    return None


def mismatch(record: dict[str, str], folder: str | Path | None) -> str | None:
    """Why ``folder`` is not the base model ``record`` names (None if it is): missing, not a folder, or another
    model (another content hash)."""
    path = Path(str(folder if folder is not None else record["path"])).expanduser()
    if not path.is_dir():
        return f"{str(path)!r} is {'not a folder' if path.exists() else 'gone'}"
    found = content_hash(path)
    if found != record["sha256"]:
        return f"{str(path)!r} holds another model (content hash {found[:12]}, not {record['sha256'][:12]})"
    return None


def check(record: dict[str, str] | None, folder: str | Path, command: str, fix: str | None = None) -> None:
    """Exit with one line unless ``folder`` holds the base model ``record`` names; ``fix`` says how to name its
    new folder in this command, if it can."""
    if record is None or (why := mismatch(record, folder)) is None:
        return
    raise SystemExit(
        f"lit_nash {command}: this LoRA run's checkpoint holds only its adapters, trained on the base model "
        f"{record['path']!r} (content hash {record['sha256'][:12]}), and {why}: move that model back there"
        + (f", or {fix} (accepted if its content hash matches)" if fix else "")
    )


def follow(stored: dict[str, Any], checkpoint: dict[str, Any], named: str | None, resume: str) -> None:
    """A resume of a LoRA run: its base model is where the stored config says, or in the folder this command
    names (``named``: ``++policy.model_path=<folder>``); else one line says what to do. A folder that moved moved
    for every key that named it (a token game's oracle reads the policy's tokenizer): each takes the new folder.
    A run without a base model record (full fine-tuning, older checkpoints) is left as it is."""
    record = recorded(checkpoint)
    if record is None:
        return
    old = stored["policy"]["model_path"]
    folder = named if named is not None else old
    check(record, folder, "fit", f"name its new folder: resume={resume} ++policy.model_path=<folder>")
    _replace(stored, old, str(folder))


def _replace(node: Any, old: str, new: str) -> None:
    for key, value in (node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()):
        if value == old:
            node[key] = new
        else:
            _replace(value, old, new)


class BaseModelRef(nn.Module):
    """A LoRA network's record of its base model, kept in its state dict (``<prefix>base_model._extra_state``):
    written into every checkpoint, and checked when a checkpoint loads, so a checkpoint is never put on top of
    another base model. The hash is computed when first asked (a run that writes no checkpoint never hashes)."""

    def __init__(self, folder: str | Path):
        super().__init__()
        self.folder = str(folder)
        self._record: dict[str, str] | None = None

    @property
    def record(self) -> dict[str, str]:
        if self._record is None:
            self._record = describe(self.folder)
        return self._record

    def get_extra_state(self) -> dict[str, Any]:
        return {"base_model": self.record}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        theirs = (state or {}).get("base_model")
        if theirs and theirs["sha256"] != self.record["sha256"]:
            raise ValueError(f"this checkpoint's LoRA adapters belong to the base model {theirs['path']!r} (content "
                             f"hash {theirs['sha256'][:12]}), and the model was loaded from {self.folder!r} (content "
                             f"hash {self.record['sha256'][:12]}): load the base model the run trained")


def leave_out_frozen(network: nn.Module, model: str = "model") -> None:
    """``network``'s state dict leaves out the frozen parameters of ``network.<model>`` (a LoRA base model), and
    loading a state dict without them is not an error (they come from the base model's folder, checked by
    ``BaseModelRef``). A state dict that has them (a checkpoint written before) still loads them."""
    at: dict[str, str] = {}

    def frozen(prefix: str) -> set[str]:
        return {f"{prefix}{model}.{name}" for name, p in getattr(network, model).named_parameters(remove_duplicate=False)
                if not p.requires_grad}

    def drop(module, state_dict, prefix, local_metadata) -> None:
        for key in frozen(prefix):
            state_dict.pop(key, None)

    def remember(module, state_dict, prefix, *args) -> None:
        at["prefix"] = prefix

    def forgive(module, incompatible) -> None:
        prefix = at.pop("prefix", "")
        allowed = frozen(prefix) | {f"{prefix}base_model._extra_state"}  # the record: absent in older checkpoints
        incompatible.missing_keys[:] = [k for k in incompatible.missing_keys if k not in allowed]

    network.register_state_dict_post_hook(drop)
    network.register_load_state_dict_pre_hook(remember)
    network.register_load_state_dict_post_hook(forgive)
