"""Bradley–Terry reward model: P(a ≻ b | x) = σ(r(x, a) − r(x, b)) from a 1-label sequence classifier.

r(x, y) is the single logit of the model on ``template(prompt=x, response=y)``, or, with
``use_chat_template`` and a tokenizer that has one, on the chat [user: x, assistant: y]. Each distinct
(prompt, response) of a call is scored once; the difference is taken in float64, so P(a ≻ b) + P(b ≻ a) = 1.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lit_nash.preference.text import TextPreference


class BradleyTerryReward(TextPreference):
    auto_class = "AutoModelForSequenceClassification"
    default_template = "{prompt} {response}"
    template_fields_required = ({"response"},)

    def __init__(
        self,
        path,
        use_chat_template: bool = True,
        **kwargs,  # TextPreference's: tokenizer_path, template, batch_size, max_length, device, dtype, trust_remote_code
    ):
        super().__init__(path, use_chat_template=use_chat_template, **kwargs)
        if int(self.model.config.num_labels) != 1:
            raise ValueError(
                f"BradleyTerryReward: the model in {str(path)!r} has {self.model.config.num_labels} labels; "
                "a reward model has exactly 1"
            )

    def render(self, prompt: str, **responses: str) -> str:
        if self.use_chat_template and getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}, {"role": "assistant", "content": responses["response"]}],
                tokenize=False,
            )
        return self.template.format(prompt=prompt, **responses)

    def rewards(self, prompts: list[str], responses: list[str]) -> Tensor:
        """r(x, y) for each (prompt, response), float64 CPU (n,); each distinct pair is scored once."""
        keys = list(dict.fromkeys(zip(prompts, responses)))
        texts = [self.render(x, response=y) for x, y in keys]
        r = torch.cat([self.model(**enc).logits[:, 0].double().cpu() for _, enc in self.chunks(texts)])
        index = {k: i for i, k in enumerate(keys)}
        return r[torch.tensor([index[k] for k in zip(prompts, responses)], dtype=torch.long)]

    def _prob(self, prompts: list[str], a: list[str], b: list[str]) -> Tensor:
        r = self.rewards(prompts + prompts, a + b)
        n = len(prompts)
        return torch.sigmoid(r[:n] - r[n:])
