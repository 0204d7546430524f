"""Pairwise classifier: a sequence-classification model reading the templated pair, both orders averaged.

p(x, y) = P(label "first wins") of the classifier on ``template(prompt, a=x, b=y)`` (softmax over its labels,
or the sigmoid of a single logit). Position bias is removed by asking in both orders:

    P(a ≻ b) = ½ [p(a, b) + 1 − p(b, a)],

so P(a ≻ b) + P(b ≻ a) = 1 by construction. Both orders of all n pairs go through the same batched forwards.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lit_nash.preference.text import TextPreference, first_wins


class PairwiseClassifier(TextPreference):
    reads_both_orders = True  # each pair is asked in both orders: two queries (pref/queries)
    auto_class = "AutoModelForSequenceClassification"
    default_template = "{prompt} [SEP] {a} [SEP] {b}"
    template_fields_required = ({"a", "b"},)

    def __init__(
        self,
        path,
        use_chat_template: bool = False,
        first_label: int = 0,
        **kwargs,  # TextPreference's: tokenizer_path, template, batch_size, max_length, device, dtype, trust_remote_code
    ):
        super().__init__(path, use_chat_template=use_chat_template, **kwargs)
        num_labels = int(self.model.config.num_labels)
        if not 0 <= first_label < max(num_labels, 1) or (num_labels == 1 and first_label != 0):
            raise ValueError(f"PairwiseClassifier: first_label {first_label} is not a label of a {num_labels}-label model")
        self.first_label = int(first_label)

    def _prob(self, prompts: list[str], a: list[str], b: list[str]) -> Tensor:
        n = len(prompts)
        texts = [self.render(x, a=y, b=z) for x, y, z in zip(prompts, a, b)]
        texts += [self.render(x, a=z, b=y) for x, y, z in zip(prompts, a, b)]
        p = torch.cat([first_wins(self.model(**enc).logits, self.first_label).cpu() for _, enc in self.chunks(texts)])
        return 0.5 * (p[:n] + (1.0 - p[n:]))
