"""General preference model (GPM; Zhang et al., "Beyond Bradley-Terry Models", arXiv 2410.02197): a preference
that can be cyclic, at the cost of one encoder pass per response.

Each (prompt, response) is embedded once, v = normalize(head(h)) ∈ R^{2k} (the first 2k outputs of a sequence
classifier read on ``template(prompt, response)``). Two responses meet in a skew-symmetric form,

    s(a ≻ b | x) = ⟨R(x)·v_a, v_b⟩ = Σ_i λ_i(x) · (v_a[2i]·v_b[2i+1] − v_a[2i+1]·v_b[2i]),
    P(a ≻ b | x) = σ(s / τ),

R(x) block-diagonal with blocks λ_i(x)·[[0, −1], [1, 0]]. With ``prompt_gate`` the eigenvalues λ(x) = k·softmax
of the last k outputs of the same head read on the prompt alone (one more pass per distinct prompt); without
it λ = 1. Since s(b ≻ a) = −s(a ≻ b) term by term, P(a ≻ b) + P(b ≻ a) = 1 holds exactly (``prob_text``
returns σ(|s|/τ) or 1 − σ(|s|/τ) in float32, and 1 − p is exact for p ≥ ½). k responses of a prompt cost k + 1
passes, where a pairwise classifier reads each of the k(k − 1)/2 pairs in both orders.

The head's shape is saved with the model: ``config.general_preference = {dim, prompt_gate, tau}`` in its
config.json (``python -m lit_nash train_preference preference=gpm`` writes it; ``new_head`` starts one, ``save_new`` saves an
untrained one).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_nash.preference.text import TextPreference

CONFIG_KEY = "general_preference"


def head_outputs(dim: int, prompt_gate: bool) -> int:
    """The head's outputs: the 2k embedding coordinates, and the k gate logits with ``prompt_gate``."""
    return dim + (dim // 2 if prompt_gate else 0)


def check_head(dim, prompt_gate, tau, where: str) -> tuple[int, bool, float]:
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2 or dim % 2:
        raise ValueError(f"{where}: dim must be an even integer ≥ 2 (k blocks of 2), got {dim!r}")
    if not isinstance(prompt_gate, bool):
        raise ValueError(f"{where}: prompt_gate must be true or false, got {prompt_gate!r}")
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not tau > 0:
        raise ValueError(f"{where}: tau must be a number > 0, got {tau!r}")
    return dim, prompt_gate, float(tau)


def skew_score(va: Tensor, vb: Tensor, gate: Tensor | None) -> Tensor:
    """⟨R·v_a, v_b⟩ for rows of embeddings (n, 2k) and eigenvalues (n, k) or None (all 1), summed block by
    block in a fixed order, so that skew_score(vb, va) is exactly −skew_score(va, vb)."""
    s = torch.zeros(va.shape[0], dtype=va.dtype, device=va.device)
    for i in range(va.shape[1] // 2):
        term = va[:, 2 * i] * vb[:, 2 * i + 1] - va[:, 2 * i + 1] * vb[:, 2 * i]
        s = s + (term if gate is None else gate[:, i] * term)
    return s


class GeneralPreferenceModel(TextPreference):
    auto_class = "AutoModelForSequenceClassification"
    default_template = "{prompt} {response}"
    template_fields_required = ({"response"},)

    def __init__(
        self,
        path,
        use_chat_template: bool = False,
        new_head: dict | None = None,  # {dim, prompt_gate, tau}: start a new head on a base model (training)
        **kwargs,  # TextPreference's: tokenizer_path, template, batch_size, max_length, device, dtype, trust_remote_code
    ):
        if new_head is not None:
            dim, gate, tau = check_head(new_head.get("dim"), new_head.get("prompt_gate"), new_head.get("tau"),
                                        "GeneralPreferenceModel: new_head")
            outputs = {i: f"gpm_{i}" for i in range(head_outputs(dim, gate))}  # id2label sets num_labels
            kwargs["model_kwargs"] = {"id2label": outputs, "label2id": {v: k for k, v in outputs.items()},
                                      "ignore_mismatched_sizes": True}
        super().__init__(path, use_chat_template=use_chat_template, **kwargs)
        config = self.model.config
        if new_head is not None:
            setattr(config, CONFIG_KEY, {"dim": dim, "prompt_gate": gate, "tau": tau})
        head = getattr(config, CONFIG_KEY, None)
        if not isinstance(head, dict):
            raise ValueError(
                f"GeneralPreferenceModel: the model in {str(path)!r} has no general-preference head (its config.json "
                f"has no {CONFIG_KEY!r}); train one with python -m lit_nash train_preference preference=gpm "
                "model_path=<base model> data.path=<pairs>"
            )
        self.dim, self.prompt_gate, self.tau = check_head(head.get("dim"), head.get("prompt_gate"), head.get("tau"),
                                                          f"GeneralPreferenceModel: {str(path)!r} config.json {CONFIG_KEY}")
        if int(config.num_labels) != head_outputs(self.dim, self.prompt_gate):
            raise ValueError(
                f"GeneralPreferenceModel: the model in {str(path)!r} has {config.num_labels} outputs; its head "
                f"(dim {self.dim}, prompt_gate {self.prompt_gate}) needs {head_outputs(self.dim, self.prompt_gate)}"
            )

    # -- text -----------------------------------------------------------------------------------------------
    def render(self, prompt: str, **responses: str) -> str:
        """The chat [user: prompt, assistant: response] with ``use_chat_template`` (and [user: prompt] for the
        gate), else the template; the gate reads the template with an empty response."""
        response = responses.get("response")
        if self.use_chat_template and getattr(self.tokenizer, "chat_template", None):
            chat = [{"role": "user", "content": prompt}]
            chat += [] if response is None else [{"role": "assistant", "content": response}]
            return self.tokenizer.apply_chat_template(chat, tokenize=False)
        return self.template.format(prompt=prompt, response="" if response is None else response)

    def _outputs(self, texts: list[str]) -> Tensor:
        """The head's outputs (n, outputs) in float64, in batches of ``batch_size`` sequences."""
        return torch.cat([self.model(**enc).logits.double() for _, enc in self.chunks(texts)])

    def embed(self, prompts: list[str], responses: list[str]) -> Tensor:
        """v(x, y), unit vectors (n, 2k) in float64; each distinct (prompt, response) is encoded once."""
        keys = sorted(set(zip(prompts, responses)))  # sorted: the same set of texts makes the same batches
        out = self._outputs([self.render(x, response=y) for x, y in keys])
        v = F.normalize(out[:, : self.dim], dim=-1)
        index = {k: i for i, k in enumerate(keys)}
        return v[torch.tensor([index[k] for k in zip(prompts, responses)], dtype=torch.long, device=v.device)]

    def gates(self, prompts: list[str]) -> Tensor | None:
        """λ(x) = k·softmax(gate logits of the prompt) (n, k) in float64, each distinct prompt encoded once;
        None without ``prompt_gate`` (every λ is 1)."""
        if not self.prompt_gate:
            return None
        keys = sorted(set(prompts))
        out = self._outputs([self.render(x) for x in keys])[:, self.dim :]
        lam = (self.dim // 2) * torch.softmax(out, dim=-1)
        index = {k: i for i, k in enumerate(keys)}
        return lam[torch.tensor([index[k] for k in prompts], dtype=torch.long, device=lam.device)]

    def logits(self, prompts: list[str], a: list[str], b: list[str]) -> Tensor:
        """s(a ≻ b | x) / τ for n triples (float64, with grad when the model has it): every distinct response
        and prompt of the call encoded once."""
        n = len(prompts)
        v = self.embed(prompts + prompts, a + b)
        return skew_score(v[:n], v[n:], self.gates(prompts)) / self.tau

    def _prob(self, prompts: list[str], a: list[str], b: list[str]) -> Tensor:
        s = self.logits(prompts, a, b).cpu()
        high = torch.sigmoid(s.abs()).float()  # in [½, 1]: 1 − high is exact, so P(a ≻ b) + P(b ≻ a) = 1
        return torch.where(s >= 0, high, 1.0 - high)


def save_new(base: str | Path, directory: str | Path, dim: int = 8, prompt_gate: bool = True, tau: float = 0.1) -> Path:
    """An untrained GPM: a new head on the model at ``base``, saved with its tokenizer to ``directory``
    (safetensors); ``bench``'s spec and tests load it as ``preference=gpm`` does."""
    from lit_nash.models import quiet_transformers

    model = GeneralPreferenceModel(base, new_head={"dim": dim, "prompt_gate": prompt_gate, "tau": tau})
    with quiet_transformers():
        model.model.save_pretrained(directory)
    model.tokenizer.save_pretrained(directory)
    return Path(directory)
