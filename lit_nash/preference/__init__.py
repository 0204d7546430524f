"""Preference models: LightningModules returning P(y ≻ y' | x) in [0, 1]."""

from lit_nash.preference.game import GameOracle
from lit_nash.preference.token_game import TokenGameOracle

__all__ = ["GameOracle", "TokenGameOracle"]
