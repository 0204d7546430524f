"""LLM judge: a causal LM shown both responses, its verdict read from the logits of two verdict tokens.

The template holds the prompt and both responses and ends where the verdict goes (with ``use_chat_template``
and a tokenizer that has one, the filled template is the user turn and the generation prompt follows). In
one order, P(first ≻ second) = softmax over the logits of the two verdict tokens at the last position;
no text is generated or parsed, and there is no fallback. Position bias is removed by asking in both orders:

    P(a ≻ b) = ½ [q(a, b) + 1 − q(b, a)],

so P(a ≻ b) + P(b ≻ a) = 1 by construction.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from lit_nash.preference.text import TextPreference


class LLMJudge(TextPreference):
    reads_both_orders = True  # each pair is asked in both orders: two queries (pref/queries)
    auto_class = "AutoModelForCausalLM"
    default_template = (
        "Prompt : {prompt}\nResponse A : {a}\nResponse B : {b}\nWhich response is better , A or B ? Answer :"
    )
    template_fields_required = ({"a", "b"},)

    def __init__(
        self,
        path,
        use_chat_template: bool = True,
        verdicts: Sequence[str] = ("A", "B"),
        **kwargs,  # TextPreference's: tokenizer_path, template, batch_size, max_length, device, dtype, trust_remote_code
    ):
        super().__init__(path, use_chat_template=use_chat_template, **kwargs)
        verdicts = list(verdicts)
        if len(verdicts) != 2:
            raise ValueError(f"LLMJudge: verdicts must be two strings (first wins, second wins), got {verdicts!r}")
        ids = []
        unk = self.tokenizer.unk_token_id
        for v in verdicts:
            tok = self.tokenizer(str(v), add_special_tokens=False)["input_ids"]
            if len(tok) != 1 or (unk is not None and tok[0] == unk):
                raise ValueError(
                    f"LLMJudge: verdict {v!r} must be exactly one known token of the judge's tokenizer, "
                    f"it encodes to {tok}"
                )
            ids.append(tok[0])
        if ids[0] == ids[1]:
            raise ValueError(f"LLMJudge: verdicts {verdicts!r} encode to the same token {ids[0]}")
        self.verdicts = verdicts
        self.verdict_ids = ids

    def _first_wins(self, enc: dict[str, Tensor]) -> Tensor:
        """softmax over the two verdict logits at each sequence's last real (right-padded) position, float64."""
        logits = self.model(**enc).logits
        last = enc["attention_mask"].sum(-1) - 1
        v = logits[torch.arange(logits.shape[0], device=logits.device), last][:, self.verdict_ids].double()
        return torch.softmax(v, dim=-1)[:, 0].cpu()

    def _prob(self, prompts: list[str], a: list[str], b: list[str]) -> Tensor:
        n = len(prompts)
        texts = [self.render(x, a=y, b=z) for x, y, z in zip(prompts, a, b)]
        texts += [self.render(x, a=z, b=y) for x, y, z in zip(prompts, a, b)]
        q = torch.cat([self._first_wins(enc) for _, enc in self.chunks(texts)])
        return 0.5 * (q[:n] + (1.0 - q[n:]))
