"""Callbacks for multi-process tests: every rank writes its full parameters, or its generator's samples, after training."""

from pathlib import Path

import lightning as L
import torch

from lit_nash.policy.causal_lm import parameters_at_rest


class SaveParams(L.Callback):
    def __init__(self, path: str):
        self.path = Path(path)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        state = {}
        for name, p in parameters_at_rest(pl_module).items():
            full = p.full_tensor() if hasattr(p, "full_tensor") else p  # a DTensor shard → the whole tensor
            state[name] = full.detach().cpu().clone()
        self.path.mkdir(parents=True, exist_ok=True)
        torch.save(state, self.path / f"rank{trainer.global_rank}.pt")


class SaveGeneratorSamples(L.Callback):
    """After training, every rank writes what its generator samples with the trained weights (pushed into a
    vLLM engine by the call): greedy responses of every prompt, and 4 unseeded samples of every prompt (their
    seeds drawn from the rank's own stream)."""

    def __init__(self, path: str):
        self.path = Path(path)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from lit_nash.generation import SamplingGroup

        generator, network = pl_module.rollouts.generator, pl_module.network
        prompt = torch.arange(network.num_prompts)
        (greedy,) = generator.generate(prompt, [SamplingGroup(k=1, temperature=0.0, seed=0)])
        (sampled,) = generator.generate(prompt, [SamplingGroup(k=4)])
        self.path.mkdir(parents=True, exist_ok=True)
        torch.save({"greedy": greedy.responses.cpu(), "sampled": sampled.responses.cpu(), "pushes": generator.pushes},
                   self.path / f"samples{trainer.global_rank}.pt")
