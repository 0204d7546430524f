"""Test settings of ENVIRONMENT.md: one torch thread (two threads on a busy 2-core box ran 50x slower)
and no model hub. Set before torch is imported; subprocesses inherit them through os.environ."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[key] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

WORDS = "user assistant : hello name a colour red blue green cat dog big small count to three".split()
TEMPLATE = "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} {% endfor %}{% if add_generation_prompt %}assistant :{% endif %}"


@pytest.fixture(scope="session")
def text_models(tmp_path_factory):
    """A saved tiny policy LM (with a chat template), a saved tiny pairwise classifier, and JSONL prompt
    files: plain prompts and conversations."""
    import json

    from transformers import AutoTokenizer

    from lit_nash.models import tiny_causal_lm, tiny_sequence_classifier

    root = tmp_path_factory.mktemp("text_models")
    policy = tiny_causal_lm(root / "policy", WORDS, seed=1)
    tok = AutoTokenizer.from_pretrained(str(policy))
    tok.chat_template = TEMPLATE
    tok.save_pretrained(str(policy))
    pairwise = tiny_sequence_classifier(root / "pairwise", WORDS + ["[", "SEP", "]"], seed=2)
    plain = root / "prompts.jsonl"
    plain.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ["name a colour", "count to three", "hello", "big cat"]))
    chat = root / "chat.jsonl"
    chat.write_text("".join(
        json.dumps({"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": "red"}]}) + "\n"
        for p in ["name a colour", "count to three", "hello", "big cat"]
    ))
    return {"policy": str(policy), "pairwise": str(pairwise), "plain": str(plain), "chat": str(chat)}
