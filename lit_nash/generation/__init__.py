"""Generators: sample responses from a policy network, behind one interface (``base.Generator``).

``hf`` decodes with Hugging Face models and KV caches (and is the only one that samples the token-level
geometric mixture of two models); ``vllm`` samples with vLLM's in-process engine (imported on first use);
``tabular`` draws actions from a tabular policy.
"""

from lit_nash.generation.base import Generator, SamplingGroup
from lit_nash.generation.hf import HFGenerator
from lit_nash.generation.tabular import TabularSampler
from lit_nash.generation.vllm import VLLMGenerator

__all__ = ["Generator", "HFGenerator", "SamplingGroup", "TabularSampler", "VLLMGenerator"]
