"""``fit task=text`` end to end through the real CLI: a saved tiny policy, a saved tiny pairwise preference
model and a JSONL prompt file (plain prompts and conversations), with LoRA on and off, tracked in MLflow."""

import json

import mlflow
import pytest

from tests.cli import run_cli


@pytest.mark.parametrize("lora, data", [(False, "plain"), (True, "chat")])
def test_fit_on_a_prompt_file_with_a_pairwise_preference_model(text_models, tmp_path, lora, data):
    setup = text_models
    overrides = [
        "task=text", "algo=egpo", f"data.path={setup[data]}", f"policy.model_path={setup['policy']}",
        f"preference.path={setup['pairwise']}", "rollout.prompts_per_step=2", "policy.max_new_tokens=6",
        "trainer.max_steps=6", "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false",
        "eval.every_n_steps=3", "eval.prompts=2", "eval.samples=2", "eval.table_rows=3",
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
    for name in ("eval/win_rate_vs_ref", "eval/win_rate_vs_snapshot"):
        history = client.get_metric_history(run.info.run_id, name)  # every 3 optimizer steps and the last: each of
        assert [m.step for m in history] == [2, 5]  # EGPO's optimizer steps is a training step, so after steps 3 and 6 (logged as s − 1) and all(0 <= m.value <= 1 for m in history)
    with open(client.download_artifacts(run.info.run_id, "completions.json", str(tmp_path))) as f:
        table = json.load(f)
    assert table["columns"] == ["step", "prompt", "opponent", "policy_response", "valid", "opponent_response",
                                "opponent_valid", "p_policy_wins", "chosen"]
    assert len(table["data"]) == 2 * 2 * 3  # 2 evaluations × 2 opponents × 3 rows
    assert [row[0] for row in table["data"]] == [6] * 6 + [3] * 6  # the newest evaluation first
    rows = [dict(zip(table["columns"], row)) for row in table["data"]]
    # valid: the response ended with EOS within policy.max_new_tokens (6 here; the tiny word-level tokenizer
    # has one token per word, so a response that ended has at most 5 words; the untrained LM rarely ends)
    assert all(isinstance(row["valid"], bool) and isinstance(row["opponent_valid"], bool) for row in rows)
    assert all(len(row["policy_response"].split()) <= 5 for row in rows if row["valid"])
    assert not all(row["valid"] for row in rows)
    assert {row[1] for row in table["data"]} <= {"name a colour", "count to three"}  # the prompts as text
