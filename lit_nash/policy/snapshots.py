"""Named frozen copies of a policy network's trainable tensors: the one snapshot store of every policy.

A snapshot is what the network trains, copied at some moment: ``ref`` (the reference), ``magnet`` (MPO),
``anchor`` (COMAL, Nash-MP), ``half_step`` (EGPO, Nash-MP), ``eval_prev`` (periodic evaluation), or a
history ring ``history/0`` (newest) … ``history/n-1`` (MNPO). What is copied is the network's choice
(``PolicyNetwork.trainable_state``): a tabular policy's log-probabilities, a causal LM's parameters, or
only its LoRA adapter, so a snapshot of a LoRA policy costs an adapter, never a second base model.

Entries are buffers of submodules, so they move with the network, shard with it, and live in its
``state_dict`` (hence in checkpoints); ``register_from_state_dict`` recreates them before a checkpoint loads.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor, nn

NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:_[A-Za-z0-9]+)*(?:/[0-9]+)?")  # "ref", "magnet", "history/0"
PREFIX = "snapshots."


def _key(name: str) -> str:
    return name.replace("/", "__")  # module names hold no "/"


def _name(key: str) -> str:
    return key.replace("__", "/")


class _Entry(nn.Module):
    """One snapshot: a dict of tensors kept as buffers ("." in tensor names becomes "-")."""

    def tensors(self) -> dict[str, Tensor]:
        return {k.replace("-", "."): v for k, v in self._buffers.items()}

    def fill(self, tensors: dict[str, Tensor]) -> "_Entry":
        for name, value in tensors.items():
            key = name.replace(".", "-")
            if key in self._buffers and self._buffers[key].shape == value.shape:
                self._buffers[key].copy_(value.detach())
            else:
                self.register_buffer(key, value.detach().clone())
        return self


class Snapshots(nn.Module):
    def __init__(self):
        super().__init__()
        self.entries = nn.ModuleDict()

    def _put(self, key: str, entry: _Entry) -> None:
        """``entries[key] = entry`` also for names of Module attributes ("half", "float", "train"), which
        ``ModuleDict.__setitem__`` refuses; entries are only ever looked up by key, never as attributes."""
        self.entries._modules[key] = entry

    @staticmethod
    def check_name(name: str) -> None:
        if not NAME.fullmatch(name):
            raise ValueError(f"snapshot name {name!r} must look like 'magnet', 'prev_iter' or 'history/0'")

    def __contains__(self, name: str) -> bool:
        return _key(name) in self.entries

    def __getitem__(self, name: str) -> dict[str, Tensor]:
        if name not in self:
            raise KeyError(f"no snapshot {name!r}; taken so far: {self.names()}")
        return self.entries[_key(name)].tensors()

    def names(self) -> list[str]:
        return sorted(_name(k) for k in self.entries.keys())

    def ring(self, name: str) -> int:
        """The length of history ring ``name`` (entries ``name/0`` … ``name/n-1``), 0 if there is none."""
        n = 0
        while f"{name}/{n}" in self:
            n += 1
        return n

    @torch.no_grad()
    def take(self, name: str, tensors: dict[str, Tensor]) -> None:
        """Snapshot ``name`` ← a copy of ``tensors`` (its buffers are reused when the shapes agree)."""
        self.check_name(name)
        key = _key(name)
        if key not in self.entries:
            self._put(key, _Entry())
        self.entries[key].fill(tensors)

    def drop(self, name: str) -> None:
        """Forget snapshot ``name`` and free its tensors (``eval`` keeps only the reference)."""
        if name not in self:
            raise KeyError(f"no snapshot {name!r}; taken so far: {self.names()}")
        del self.entries[_key(name)]

    @torch.no_grad()
    def push(self, name: str, tensors: dict[str, Tensor], maxlen: int) -> None:
        """Prepend a copy of ``tensors`` to history ring ``name``: ``name/0`` is the newest, ``maxlen`` kept."""
        self.check_name(name)
        if maxlen < 1:
            raise ValueError(f"push maxlen must be >= 1, got {maxlen}")
        n = self.ring(name)
        old = [self.entries.pop(_key(f"{name}/{i}")) for i in range(n)]
        newest = old[maxlen - 1] if n >= maxlen else _Entry()  # reuse the oldest's buffers
        for i, entry in enumerate([newest.fill(tensors)] + old[: maxlen - 1]):
            self._put(_key(f"{name}/{i}"), entry)

    def register_from_state_dict(self, state_dict: dict[str, Tensor], prefix: str, device=None) -> None:
        """Create the entries a checkpoint holds (under ``prefix``), so ``load_state_dict`` can fill them."""
        head = prefix + "entries."
        for key, value in state_dict.items():
            if not key.startswith(head):
                continue
            name, buffer = key[len(head):].split(".", 1)
            if name not in self.entries:
                self._put(name, _Entry())
            entry = self.entries[name]
            if buffer not in entry._buffers or entry._buffers[buffer].shape != value.shape:
                entry.register_buffer(buffer, torch.empty_like(value, device=device))
