"""``python -m lit_nash export`` and ``fit export.dir=...`` (issue 23.5): a trained policy leaves lit_nash as a
Hugging Face folder. Loaded with plain transformers (merged weights, and the LoRA adapter through peft) and with
vLLM where it is installed, the folder gives the checkpoint's policy's greedy responses and their log-probs; an
existing folder is refused unless asked, and the MLflow run links to the folder."""

import gc
import json
import os

import pytest
import torch

from lit_nash.build import build_trained_network
from lit_nash.export import write_model_folder
from lit_nash.generation import HFGenerator, SamplingGroup
from lit_nash.games.token import token_game
from lit_nash.models import tiny_causal_lm
from lit_nash.policy.causal_lm import CausalLMPolicy
from tests.cli import run_cli
from tests.generation.test_vllm import MISSING as VLLM_MISSING

from .policy.test_causal_lm import train

QUIET = ["trainer.enable_progress_bar=false"]
TOLERANCE = 1e-4  # fp32 merged weights against base + adapter: round-off only


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, text_models):
    """A LoRA text run (a tiny LM with a chat template, judged by a tiny classifier) whose adapters moved (lr
    0.05), exported by fit at its end (merged; 2 steps, then resumed to 3: the resumed run writes over its own
    export) and by the export command from its MLflow run id (the adapter)."""
    cwd = tmp_path_factory.mktemp("lora_run")
    fit = run_cli("fit", "task=text", "policy=causal_lm_lora", f"data.path={text_models['plain']}",
                  f"policy.model_path={text_models['policy']}", f"preference.path={text_models['pairwise']}",
                  "rollout.prompts_per_step=2", "policy.max_new_tokens=6", "policy.optimizer.lr=0.05",
                  "trainer.max_steps=2", f"export.dir={cwd / 'merged'}", *QUIET, cwd=cwd)
    assert fit.returncode == 0, fit.stderr[-3000:]
    (ckpt,) = cwd.glob("outputs/*/*/checkpoints/last.ckpt")
    assert json.loads((cwd / "merged" / "lit_nash_export.json").read_text())["step"] == 2
    resumed = run_cli("fit", f"resume={ckpt}", "trainer.max_steps=3", *QUIET, cwd=cwd)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    record = json.loads((cwd / "merged" / "lit_nash_export.json").read_text())
    assert record["step"] == 3
    run_id = record["mlflow_run_id"]
    adapter = run_cli("export", f"checkpoint={run_id}", f"out={cwd / 'adapter'}", "weights=adapter", cwd=cwd)
    assert adapter.returncode == 0, adapter.stderr[-3000:]
    assert f"wrote {cwd / 'adapter'}" in adapter.stdout
    return {"cwd": cwd, "checkpoint": ckpt, "run_id": run_id}


def checkpoint_policy(path):
    network, _, _ = build_trained_network(torch.load(path, map_location="cpu", weights_only=True))
    return network.eval()


def greedy(policy, source="policy"):
    """The policy's greedy responses to every prompt through lit_nash's own generator (top-k 1), as token lists up
    to and including EOS, and their log-probs under ``source`` (the policy, or its reference)."""
    prompts = torch.arange(policy.num_prompts)
    with torch.no_grad():
        (samples,) = HFGenerator(policy).generate(prompts, [SamplingGroup(k=1, top_k=1, seed=0)])
        logp = policy.response_log_probs(prompts, samples.responses, source=source)[:, 0]
    mask = policy.response_mask(samples.responses[:, 0])
    return [row[m].tolist() for row, m in zip(samples.responses[:, 0], mask)], logp


def encode(tokenizer, prompt: str, chat: bool) -> list[int]:
    """A prompt as a user of the exported folder encodes it: a user turn through its chat template, or plain text."""
    if not chat:
        return tokenizer(prompt)["input_ids"]
    ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def transformers_greedy(model, tokenizer, prompts, max_new_tokens, eos, chat):
    """Plain transformers: each prompt through the exported tokenizer, greedy ``generate``, and the log-prob of
    the response from one forward."""
    tokens, logps = [], []
    for text in prompts:
        ids = torch.tensor([encode(tokenizer, text, chat)])
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=max_new_tokens,
                                 eos_token_id=eos, pad_token_id=tokenizer.pad_token_id)
            response = out[0, ids.shape[1]:].tolist()
            response = response[: response.index(eos) + 1] if eos in response else response
            full = torch.tensor([ids[0].tolist() + response])
            logits = model(full).logits[0, ids.shape[1] - 1 : -1].float().log_softmax(-1)
        tokens.append(response)
        logps.append(logits.gather(-1, torch.tensor(response)[:, None]).sum())
    return tokens, torch.stack(logps)


def check_same(policy, folder, model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    chat = json.loads((folder / "lit_nash_export.json").read_text())["prompt_format"] == "chat template"
    assert chat == policy.codec.chat
    assert [encode(tokenizer, p, chat) for p in policy.prompts] == [policy.codec.prompt_tokens(i) for i in range(policy.num_prompts)]
    expected, expected_logp = greedy(policy)
    got, got_logp = transformers_greedy(model.eval(), tokenizer, policy.prompts, policy.max_new_tokens, policy.eos_id, chat)
    assert got == expected
    assert torch.allclose(got_logp, expected_logp, atol=TOLERANCE), (got_logp, expected_logp)
    return expected, expected_logp


def test_merged_folder_gives_the_checkpoints_greedy_responses_and_log_probs(lora_run):
    from transformers import AutoModelForCausalLM

    policy = checkpoint_policy(lora_run["checkpoint"])
    folder = lora_run["cwd"] / "merged"
    model = AutoModelForCausalLM.from_pretrained(str(folder))
    assert not any("lora" in name for name, _ in model.named_parameters())  # a plain model, no adapter
    _, logp = check_same(policy, folder, model)
    _, base = greedy(policy, source="ref")  # not vacuous: the adapter changed these log-probs far beyond round-off
    assert (base - logp).abs().max() > 100 * TOLERANCE


def test_adapter_folder_names_its_base_and_loads_with_peft(lora_run):
    from peft import AutoPeftModelForCausalLM

    policy = checkpoint_policy(lora_run["checkpoint"])
    folder = lora_run["cwd"] / "adapter"
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == policy.base_model.record["path"]  # absolute, the checkpoint's base
    assert not (folder / "model.safetensors").exists()
    check_same(policy, folder, AutoPeftModelForCausalLM.from_pretrained(str(folder)))


def test_the_mlflow_run_links_to_the_export(lora_run):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{lora_run['cwd']}/mlruns.db")
    run = client.get_run(lora_run["run_id"])
    assert run.data.tags["export"] == str(lora_run["cwd"] / "adapter")  # the latest export
    logged = {a.path for a in client.list_artifacts(lora_run["run_id"], "export")}
    assert logged == {"export/merged", "export/adapter"}
    assert "export/merged/model.safetensors" in {a.path for a in client.list_artifacts(lora_run["run_id"], "export/merged")}


def test_an_existing_folder_is_refused_unless_asked(lora_run, tmp_path):
    folder = lora_run["cwd"] / "merged"
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    out = run_cli("export", f"checkpoint={lora_run['checkpoint']}", f"out={folder}", cwd=tmp_path)
    assert out.returncode != 0
    assert out.stderr.strip().splitlines() == [
        f"lit_nash export: out='{folder}' already exists and is not empty; give a new folder, or overwrite=true to replace it"]
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before
    fit = run_cli("fit", "task=token_game", "policy=causal_lm_lora", "trainer.max_steps=1", f"export.dir={folder}",
                  *QUIET, cwd=tmp_path)
    assert fit.returncode != 0
    assert f"lit_nash fit: export.dir='{folder}' already exists and is not empty; give a new folder, or remove it first" in fit.stderr
    assert not (tmp_path / "outputs").exists()  # refused before it trained


def test_full_fine_tune_exports_its_own_weights(tmp_path):
    """A fully fine-tuned policy (no LoRA) writes its trained weights; weights=adapter is refused for it."""
    from transformers import AutoModelForCausalLM

    game = token_game()
    policy = CausalLMPolicy(str(tiny_causal_lm(tmp_path / "lm", game.vocabulary(), arch="llama")), game=game, max_new_tokens=3)
    train(policy, steps=3, lr=0.05)
    policy.eval()
    with pytest.raises(SystemExit, match="weights=adapter needs a LoRA run"):
        write_model_folder(policy, tmp_path / "adapter", "adapter", None, {})
    assert not (tmp_path / "adapter").exists()
    write_model_folder(policy, tmp_path / "out", "merged", None, {"step": 3})
    assert json.loads((tmp_path / "out" / "lit_nash_export.json").read_text())["prompt_format"] == "plain text"
    _, logp = check_same(policy, tmp_path / "out", AutoModelForCausalLM.from_pretrained(str(tmp_path / "out")))
    assert (greedy(policy, source="ref")[1] - logp).abs().max() > 100 * TOLERANCE  # trained weights, not the start


@pytest.mark.skipif(VLLM_MISSING is not None, reason=VLLM_MISSING or "")
def test_vllm_loads_the_merged_folder(lora_run):
    """vLLM's engine on the merged folder: the same greedy tokens, log-probs within its CPU kernels' round-off."""
    import vllm

    from lit_nash.generation.vllm import ENV

    for key, value in ENV.items():
        os.environ.setdefault(key, value)
    policy = checkpoint_policy(lora_run["checkpoint"])
    expected, expected_logp = greedy(policy)
    llm = vllm.LLM(model=str(lora_run["cwd"] / "merged"), dtype="float32", enforce_eager=True, seed=0,
                   kv_cache_memory_bytes=2**26)
    params = vllm.SamplingParams(temperature=0.0, max_tokens=policy.max_new_tokens, logprobs=0, ignore_eos=True,
                                 stop_token_ids=[policy.eos_id], detokenize=False)
    prompts = [{"prompt_token_ids": policy.codec.prompt_tokens(i)} for i in range(policy.num_prompts)]
    outputs = llm.generate(prompts, params, use_tqdm=False)
    got = [list(o.outputs[0].token_ids) for o in outputs]
    got_logp = torch.tensor([sum(e[t].logprob for t, e in zip(o.outputs[0].token_ids, o.outputs[0].logprobs))
                             for o in outputs])
    del llm
    gc.collect()
    assert got == expected
    assert torch.allclose(got_logp, expected_logp.float(), atol=1e-3), (got_logp, expected_logp)
