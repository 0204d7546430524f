"""Preference models: LightningModules returning P(y ≻ y' | x) in [0, 1]."""

from lit_nash.preference.game import GameOracle
from lit_nash.preference.gpm import GeneralPreferenceModel
from lit_nash.preference.judge import LLMJudge
from lit_nash.preference.pairwise import PairwiseClassifier
from lit_nash.preference.reward import BradleyTerryReward
from lit_nash.preference.token_game import TokenGameOracle

__all__ = ["BradleyTerryReward", "GameOracle", "GeneralPreferenceModel", "LLMJudge", "PairwiseClassifier", "TokenGameOracle"]
