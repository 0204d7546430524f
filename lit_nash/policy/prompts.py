"""Prompts as a causal LM policy sees them (token ids through its tokenizer and chat template) and as a
preference model reads them (text), and responses as text.

One ``PromptCodec`` per policy network: it owns the policy's tokenizer and the prompt list of the run.
"""

from __future__ import annotations

import torch
from torch import Tensor


class PromptCodec:
    def __init__(self, tokenizer, prompts: list, use_chat_template: bool | None, max_prompt_tokens: int | None,
                 pad_id: int, where: str):
        self.tokenizer, self.prompts, self.pad_id, self.where = tokenizer, list(prompts), pad_id, where
        self.eos_id = tokenizer.eos_token_id
        self.max_prompt_tokens = max_prompt_tokens
        self.chat = self._chat_mode(use_chat_template)
        self._tokens: dict[int, list[int]] = {}  # tokenized on first use: datasets can be large

    def _chat_mode(self, use_chat_template: bool | None) -> bool:
        """Whether plain-text prompts are wrapped as a user turn; conversations always use the template."""
        has = bool(getattr(self.tokenizer, "chat_template", None))
        if use_chat_template and not has:
            raise ValueError(f"policy.use_chat_template is true but the tokenizer of {self.where} has no chat template")
        conversational = any(not isinstance(p, str) for p in self.prompts)
        if conversational and not has:
            raise ValueError(f"the prompts are conversations but the tokenizer of {self.where} has no chat template")
        if conversational and use_chat_template is False:
            raise ValueError("the prompts are conversations: they need policy.use_chat_template true or null")
        return has if use_chat_template is None else bool(use_chat_template)

    def prompt_tokens(self, i: int) -> list[int]:
        """Token ids of prompt i: a conversation (or, with a chat template on, a plain prompt as one user
        turn) through the chat template with the generation prompt; plain text as the tokenizer encodes it.
        ``max_prompt_tokens`` keeps the last tokens (the end holds the question and the generation prompt)."""
        if i not in self._tokens:
            self._tokens[i] = self._encode(i)
        return self._tokens[i]

    def _encode(self, i: int) -> list[int]:
        prompt = self.prompts[i]
        if isinstance(prompt, str) and not self.chat:
            ids = self.tokenizer(prompt)["input_ids"]
        else:
            messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]  # the template has its own
        if not ids:
            raise ValueError(f"prompt {i} ({prompt!r}) has no tokens (the tokenizer adds none, e.g. no BOS)")
        limit = self.max_prompt_tokens
        return list(ids if limit is None else ids[-limit:])

    def check_context(self, positions: int | None, max_new_tokens: int) -> None:
        """Every prompt (as ``max_prompt_tokens`` keeps it) and a response of ``max_new_tokens`` must fit the
        model's ``positions``, or a position embedding is indexed past its end in the middle of training. Checked
        at start-up: when ``max_prompt_tokens`` bounds the sum, without tokenizing anything; otherwise every
        prompt is tokenized once (not kept)."""
        if positions is None:
            return
        where = f"the model of {self.where} has {positions} positions (max_position_embeddings)"
        if max_new_tokens >= positions:
            raise ValueError(f"policy.max_new_tokens={max_new_tokens} does not fit: {where}, and a response follows at "
                             f"least one prompt token; set policy.max_new_tokens to at most {positions - 1} minus the "
                             "prompt's tokens")
        limit = self.max_prompt_tokens
        if limit is not None and limit + max_new_tokens <= positions:
            return
        longest, at = 0, 0
        for i in range(len(self.prompts)):
            n = len(self._tokens[i]) if i in self._tokens else len(self._encode(i))
            if n > longest:
                longest, at = n, i
        if longest + max_new_tokens > positions:
            fit = positions - max_new_tokens
            raise ValueError(
                f"prompt {at} ({_shown(self.prompts[at])}) has {longest} tokens"
                + (f" (policy.max_prompt_tokens={limit})" if limit is not None else "")
                + f", and with policy.max_new_tokens={max_new_tokens} its sequence needs {longest + max_new_tokens} "
                f"positions, but {where}; keep the last tokens of long prompts with policy.max_prompt_tokens={fit}"
                + (f", or lower policy.max_new_tokens to {positions - longest}" if positions > longest else "")
            )

    def prompt_batch(self, prompt: Tensor, k: int, device) -> tuple[Tensor, Tensor]:
        """Left-padded ids and mask of these prompts only (padded to the longest of them), each repeated
        k times (row n·k + j)."""
        rows = [self.prompt_tokens(i) for i in prompt.tolist()]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for n, r in enumerate(rows):
            ids[n, width - len(r):] = torch.tensor(r, dtype=torch.long)
            mask[n, width - len(r):] = 1
        return ids.to(device).repeat_interleave(k, 0), mask.to(device).repeat_interleave(k, 0)

    def prompt_text(self, i: int) -> str:
        """Prompt i as text for a preference model: the string, a one-turn conversation's message, or the
        turns as "role: content" lines."""
        prompt = self.prompts[i]
        if isinstance(prompt, str):
            return prompt
        if len(prompt) == 1:
            return prompt[0]["content"]
        return "\n".join(f"{m['role']}: {m['content']}" for m in prompt)

    def response_mask(self, responses: Tensor) -> Tensor:
        """True on the tokens up to and including the first EOS (all tokens if there is none)."""
        eos = responses == self.eos_id
        return (eos.long().cumsum(-1) - eos.long()) == 0

    def decode(self, responses: Tensor) -> list[str]:
        """Responses (..., T) as text, up to the first EOS, without special tokens."""
        flat = responses.reshape(-1, responses.shape[-1])
        mask = self.response_mask(flat)
        ids = [row[m].tolist() for row, m in zip(flat.cpu(), mask.cpu())]
        return self.tokenizer.batch_decode(ids, skip_special_tokens=True)

    def encode_responses(self, responses: list[tuple[str, ...]]) -> Tensor:
        """Each game response as ids + EOS, right-padded (R, max_len + 1); every word must be one token."""
        rows = []
        for r in responses:
            ids = [self.tokenizer(w, add_special_tokens=False)["input_ids"] for w in r]
            if any(len(i) != 1 or i[0] == self.tokenizer.unk_token_id for i in ids):
                raise ValueError(
                    f"game response {r} is not one known token per word in the tokenizer of "
                    f"{self.where}: the exact distribution needs a word-level vocabulary"
                )
            rows.append([i[0] for i in ids] + [self.eos_id])
        width = max(len(r) for r in rows)
        return torch.tensor([r + [self.pad_id] * (width - len(r)) for r in rows], dtype=torch.long)


def _shown(prompt, width: int = 60) -> str:
    """A prompt as an error message quotes it: its first ``width`` characters."""
    text = str(prompt)
    return repr(text[:width]) + ("..." if len(text) > width else "")
