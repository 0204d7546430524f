"""Preference models: LightningModules returning P(y ≻ y' | x) in [0, 1]."""

from lit_nash.preference.game import GameOracle

__all__ = ["GameOracle"]
