"""Writes hf_reference.pt: the tokens and log-probs of the fused KV-cache decoding loop as it was before it
moved out of the policy into ``lit_nash.generation.hf`` (run once, at commit 3057195, with the old
``CausalLMPolicy.sample_groups``). ``test_hf.py`` checks the ``hf`` generator against it with ``torch.equal``.

    python tests/generation/make_hf_reference.py   # only meaningful on the code of that commit
"""

from pathlib import Path
import tempfile

import torch

from lit_nash.games.token import token_game
from lit_nash.models import tiny_causal_lm
from lit_nash.policy.causal_lm import CausalLMPolicy

GAME = token_game()
PROMPTS = torch.arange(GAME.num_prompts)
TEXT_PROMPTS = ["say 0", "say 0 1 a b", "a", "say"]  # left padding of different lengths
LORA = {
    "gpt2": {"r": 4, "lora_alpha": 8, "target_modules": ["c_attn", "c_proj"], "fan_in_fan_out": True},
    "llama": {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]},
}
GROUPS = [
    [dict(k=2, temperature=2.0, top_k=3), dict(k=1)],
    [dict(k=2), dict(k=2, source="mixture", mixture_coef=0.4)],
    [dict(k=2), dict(k=3, source="snap", top_p=0.9)],
    [dict(k=3, source="ref", temperature=0.7, top_k=5, top_p=0.8)],
]
CASES = [(arch, lora, text) for arch in ("gpt2", "llama") for lora in (False, True) for text in (False, True)]


def train(policy, steps, lr=0.05):
    opt = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=lr)
    R, L = policy.response_ids.shape
    for _ in range(steps):
        loss = -policy.response_log_probs(PROMPTS, policy.response_ids.expand(len(PROMPTS), R, L)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def main() -> None:
    out = {}
    with tempfile.TemporaryDirectory() as root:
        for arch, lora, text in CASES:
            path = tiny_causal_lm(Path(root) / arch, GAME.vocabulary(), arch=arch, seed=0)
            torch.manual_seed(0)
            kw = dict(prompts=TEXT_PROMPTS) if text else dict(game=GAME)
            policy = CausalLMPolicy(str(path), lora=LORA[arch] if lora else None, max_new_tokens=6, **kw)
            if not text:
                train(policy, 1)
            policy.refresh_snapshot("snap")
            if not text:
                train(policy, 2)
            for g, groups in enumerate(GROUPS):
                res = policy.sample_groups(PROMPTS, groups, return_log_probs=True, seeds=[11 + g, 12 + g])
                out[f"{arch}-lora{int(lora)}-text{int(text)}-g{g}"] = {
                    "tokens": [r for r, _ in res], "logp": [lp for _, lp in res]}
            torch.manual_seed(5)
            out[f"{arch}-lora{int(lora)}-text{int(text)}-global"] = {"tokens": [policy.sample(PROMPTS, 3)]}
    torch.save(out, Path(__file__).with_name("hf_reference.pt"))
    print(f"wrote {len(out)} cases")


if __name__ == "__main__":
    main()
