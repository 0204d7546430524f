"""A tabular softmax policy: one distribution over K actions per prompt (a matrix game is one prompt; a
batch of games is many), logits of shape (prompts, K). The network behind ``PolicyNetwork`` for games.

In exact play the engine regresses the logits onto the algorithm's closed-form iterate; in sampled play
``lit_nash.generation.tabular`` draws actions from it and the practical loss trains it, exactly as for a
causal LM, so the losses are checked on ground truth.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lit_nash.games import dynamics as D
from lit_nash.guards import check_finite
from lit_nash.models import torch_dtype
from lit_nash.policy.network import SnapshotMixin
from lit_nash.policy.snapshots import PREFIX, Snapshots
from lit_nash.validate import choice

REFERENCES = ("uniform", "gaussian")
DTYPES = ("float64", "float32")  # exact dynamics reach gaps of 1e-16 only in float64


def reference_logits(kind: str, num_prompts: int, num_actions: int, seed: int = 0) -> Tensor:
    """Reference logits: uniform, or N(0, 1) per prompt as in EGPO's simulations."""
    if kind == "uniform":
        return torch.zeros(num_prompts, num_actions, dtype=torch.float64)
    if kind == "gaussian":
        g = torch.Generator().manual_seed(seed)
        return torch.randn(num_prompts, num_actions, generator=g, dtype=torch.float64)
    raise ValueError(f"policy.reference must be one of {list(REFERENCES)}, got {kind!r}")


class TabularPolicy(SnapshotMixin, nn.Module):
    def __init__(self, num_prompts: int | None = None, num_actions: int | None = None, reference: str = "uniform",
                 reference_seed: int = 0, init: str = "reference", dtype: str = "float64", game=None):
        """Sizes come from ``game`` (prompts × actions) or from ``num_prompts`` and ``num_actions``."""
        super().__init__()
        if game is not None:
            num_prompts, num_actions = game.num_prompts, game.num_actions
        if num_prompts is None or num_actions is None:
            raise ValueError("TabularPolicy needs a game or num_prompts and num_actions")
        choice("policy.init", init, ("reference", "uniform"))
        choice("policy.dtype", dtype, DTYPES)
        ref = reference_logits(reference, num_prompts, num_actions, reference_seed).to(torch_dtype(dtype, "policy.dtype"))
        start = ref if init == "reference" else torch.zeros_like(ref)
        self.logits = nn.Parameter(D.normalize(start))
        self.snapshots = Snapshots()
        self.snapshots.take("ref", {"log_probs": D.normalize(ref)})

    @property
    def num_prompts(self) -> int:
        return self.logits.shape[0]

    # -- PolicyNetwork -----------------------------------------------------------------------------
    def trainable_parameters(self) -> list[nn.Parameter]:
        return [self.logits]

    def trainable_state(self) -> dict[str, Tensor]:
        return {"log_probs": self.log_probs()}

    @torch.no_grad()
    def blend_snapshot(self, name: str, rate: float) -> None:
        """The parameter-space EMA, renormalized: on log-probs it is the geometric mixture snapshot^(1−rate)·π^rate."""
        super().blend_snapshot(name, rate)
        log_probs = self.snapshots[name]["log_probs"]
        log_probs.copy_(D.normalize(log_probs))

    @torch.no_grad()
    def load_trainable_state(self, tensors: dict[str, Tensor]) -> None:
        self.logits.copy_(tensors["log_probs"])

    def log_probs(self, source: str = "policy") -> Tensor:
        return self.source_log_probs(source).detach()

    def snapshot(self, name: str) -> Tensor:
        n = self.snapshots.ring(name)
        if n:
            return torch.stack([self.snapshots[f"{name}/{i}"]["log_probs"] for i in range(n)])
        return self.snapshots[name]["log_probs"]

    def source_log_probs(self, source: str = "policy", mixture_coef: float = 0.0) -> Tensor:
        """Log-probs (prompts, K) of a source; with grad for "policy"."""
        if source == "policy":
            return D.normalize(self.logits)
        if source == "mixture":
            return D.geometric_mixture(D.normalize(self.logits.detach()), self.snapshot("ref"), mixture_coef)
        return self.snapshot(source)

    def response_log_probs(self, prompt: Tensor, responses: Tensor, source: str = "policy", reduction: str = "sum",
                           mixture_coef: float = 0.0) -> Tensor:
        """log π(y | prompt) of action indices (N, m). A response is one action, so ``reduction`` changes nothing."""
        log_probs = check_finite(self.source_log_probs(source, mixture_coef), f"log-probs of {source!r}")
        if source != "policy":
            log_probs = log_probs.detach()
        return log_probs[prompt.unsqueeze(-1), responses]

    def scoring_bytes(self, prompt: Tensor, responses: Tensor) -> Tensor:
        """(N,): memory of scoring each prompt row with grad: its logits' log-softmax, the gathered log-probs
        and their gradients, K·b and m·b bytes twice over (b bytes per element)."""
        b = torch.finfo(self.logits.dtype).bits // 8
        return torch.full((len(prompt),), float(2 * b * (self.logits.shape[1] + responses.shape[1])))

    @torch.no_grad()
    def set_logits(self, value: Tensor) -> None:
        self.logits.copy_(value)

    def register_checkpoint(self, state_dict: dict[str, Tensor], prefix: str = "") -> None:
        """Create the snapshots a checkpoint's state dict holds, so ``load_state_dict`` fills them."""
        self.snapshots.register_from_state_dict(state_dict, prefix + PREFIX, self.logits.device)
