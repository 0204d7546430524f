"""Named frozen copies of a policy, kept as buffers so they move with the module and live in checkpoints.

A snapshot is the policy's log-probabilities at some moment: ``ref`` (the reference), ``magnet``
(MPO), ``anchor`` (COMAL), or a history ring of the most recent iterates (MNPO). For a tabular policy a
snapshot is a (prompts × K) tensor; the causal-LM policy keeps its own (LoRA adapters or state copies).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

PREFIX = "snapshots."


class Snapshots(nn.Module):
    def __contains__(self, name: str) -> bool:
        return name in self._buffers

    def __getitem__(self, name: str) -> Tensor:
        if name not in self._buffers:
            raise KeyError(f"no snapshot {name!r}; taken so far: {sorted(self._buffers)}")
        return self._buffers[name]

    @staticmethod
    def _check_name(name: str) -> None:
        if hasattr(nn.Module, name) or not name.isidentifier():
            raise ValueError(f"snapshot name {name!r} is not usable: pick an identifier that is not an nn.Module attribute")

    def set(self, name: str, value: Tensor) -> None:
        """Take (or overwrite) snapshot ``name`` as a detached copy of ``value``."""
        self._check_name(name)
        value = value.detach().clone()
        if name in self._buffers and self._buffers[name].shape == value.shape:
            self._buffers[name].copy_(value)
        else:
            self.register_buffer(name, value)

    def push(self, name: str, value: Tensor, maxlen: int) -> None:
        """Prepend ``value`` to history ``name`` (stacked on dim 0, newest first), keeping ``maxlen``."""
        self._check_name(name)
        value = value.detach().unsqueeze(0)
        history = torch.cat([value, self._buffers[name]])[:maxlen] if name in self else value.clone()
        self.register_buffer(name, history)

    def names(self) -> list[str]:
        return sorted(self._buffers)

    def register_from_state_dict(self, state_dict: dict[str, Tensor], prefix: str) -> None:
        """Create empty buffers for the snapshots a checkpoint holds, so ``load_state_dict`` can fill them."""
        for key, value in state_dict.items():
            if key.startswith(prefix):
                self.register_buffer(key[len(prefix):], torch.empty_like(value))
