"""``fit task=text`` end to end through the real CLI: a saved tiny policy, a saved tiny pairwise preference
model and a JSONL prompt file (plain prompts and conversations), with LoRA on and off, tracked in MLflow."""

import json

import mlflow
import pytest
from transformers import AutoTokenizer

from lit_nash.models import tiny_causal_lm, tiny_sequence_classifier
from tests.cli import run_cli

WORDS = "user assistant : hello name a colour red blue green cat dog big small count to three".split()
TEMPLATE = "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} {% endfor %}{% if add_generation_prompt %}assistant :{% endif %}"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("text_fit")
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


@pytest.mark.parametrize("lora, data", [(False, "plain"), (True, "chat")])
def test_fit_on_a_prompt_file_with_a_pairwise_preference_model(setup, tmp_path, lora, data):
    overrides = [
        "task=text", "algo=egpo", f"data.path={setup[data]}", f"policy.model_path={setup['policy']}",
        f"preference.path={setup['pairwise']}", "rollout.prompts_per_step=2", "policy.max_new_tokens=6",
        "trainer.max_steps=6", "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false",
    ]
    if data == "chat":
        overrides.append("data.column=messages")
    if lora:
        overrides += ["policy=causal_lm_lora"]
    done = run_cli("fit", *overrides, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "lit_nash fit: egpo on" in done.stdout
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlruns.db")
    (run,) = client.search_runs([client.get_experiment_by_name("lit_nash").experiment_id])
    assert run.data.tags["algo"] == "egpo" and run.data.tags["data"] == {"plain": "prompts", "chat": "chat"}[data]  # the file stem
    assert run.data.params["policy.lora.r"] == "8" if lora else run.data.params["policy.lora"] == "None"
    losses = client.get_metric_history(run.info.run_id, "train/loss")
    assert len(losses) >= 3 and all(m.value == m.value for m in losses)  # logged, finite (not NaN)
    assert not any(k.startswith("game/") for k in run.data.metrics)  # no game, no exact gaps
