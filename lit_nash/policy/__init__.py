"""Trained policies: LightningModules behind one interface, tabular (one softmax per prompt) and causal LM."""

from lit_nash.policy.causal_lm import CausalLMPolicy
from lit_nash.policy.tabular import REFERENCES, TabularPolicy, reference_logits

__all__ = ["REFERENCES", "CausalLMPolicy", "TabularPolicy", "reference_logits"]
