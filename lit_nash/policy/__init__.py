"""Policy networks behind one interface (``network.PolicyNetwork``): tabular (one softmax per prompt) and a
causal LM; the engine's ``PolicyModule`` trains one."""

from lit_nash.policy.causal_lm import CausalLMPolicy
from lit_nash.policy.network import PolicyNetwork
from lit_nash.policy.tabular import REFERENCES, TabularPolicy, reference_logits

__all__ = ["REFERENCES", "CausalLMPolicy", "PolicyNetwork", "TabularPolicy", "reference_logits"]
