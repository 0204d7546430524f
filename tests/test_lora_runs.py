"""Issue 15, what a user hit with LoRA: a run whose LoRA settings were list-valued command-line overrides
could not be evaluated nor resumed (``torch.load(weights_only=True)``: ``Unsupported global: GLOBAL
omegaconf.dictconfig.DictConfig``), and ``policy=causal_lm_lora`` named GPT-2's modules, so a Llama model
failed (peft's NoMatchingPeftModuleError). Also a short LoRA run on a real pretrained Llama-architecture
model (SmolLM2-135M-Instruct, scripts/prepare_real_models.py), skipped when it is not there."""

import os
from pathlib import Path

import pytest
import torch

from lit_nash.checkpointing import AtomicCheckpointIO, config_containers
from tests.cli import run_cli

REAL_MODELS = Path(os.environ.get("LIT_NASH_REAL_MODELS", "/work/real_models"))
SMOLLM2 = REAL_MODELS / "smollm2-135m-instruct"
INSTRUCTIONS = Path(__file__).resolve().parents[1] / "data" / "instructions.jsonl"
QUIET = ["trainer.enable_progress_bar=false"]


def only_checkpoint(root: Path) -> Path:
    found = sorted(root.glob("outputs/*/*/checkpoints/last.ckpt"))
    assert len(found) == 1, found
    return found[0]


def test_lora_run_with_list_overrides_loads_evaluates_and_resumes(tmp_path):
    out = run_cli("fit", "task=token_game", "policy=causal_lm_lora", "policy.lora.target_modules=[c_attn]",
                  "+policy.lora.layers_to_transform=[0,1]", "trainer.max_steps=2", *QUIET, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    ckpt = only_checkpoint(tmp_path)
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)  # what eval and resume do
    assert config_containers(checkpoint) == []
    lora = checkpoint["lit_nash_config"]["policy"]["lora"]
    assert type(lora["target_modules"]) is list and lora["layers_to_transform"] == [0, 1]
    assert any("lora_A" in k for k in checkpoint["state_dict"])

    evaluated = run_cli("eval", f"policies=[{ckpt}]", "samples=2", cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    resumed = run_cli("fit", f"resume={ckpt}", "trainer.max_steps=4", *QUIET, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"] == 4


def test_a_checkpoint_holding_omegaconf_containers_is_refused_before_it_is_written(tmp_path):
    from omegaconf import OmegaConf

    bad = {"state_dict": {"w": torch.zeros(2)}, "hyper_parameters": {"lora": OmegaConf.create({"r": [1]})}}
    with pytest.raises(TypeError, match=r"\['hyper_parameters'\]\['lora'\] \(DictConfig\)"):
        AtomicCheckpointIO().save_checkpoint(bad, tmp_path / "last.ckpt")
    assert not (tmp_path / "last.ckpt").exists()


def test_default_lora_fits_a_llama_model(tmp_path):
    """policy=causal_lm_lora's defaults on a Llama-architecture model: a token-game fit trains its adapters."""
    from lit_nash.games.token import token_game
    from lit_nash.models import tiny_causal_lm

    model = tiny_causal_lm(tmp_path / "llama", token_game().vocabulary(), arch="llama")
    out = run_cli("fit", "task=token_game", "policy=causal_lm_lora", f"policy.model_path={model}",
                  "trainer.max_steps=2", *QUIET, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    state = torch.load(only_checkpoint(tmp_path), map_location="cpu", weights_only=True)["state_dict"]
    assert any("q_proj.lora_A" in k for k in state) and any("down_proj.lora_A" in k for k in state)


def test_a_lora_checkpoint_names_its_base_model_reaches_mlflow_and_resumes_bit_identically(tmp_path):
    """Issue 23.3 and 25.10: a LoRA run's checkpoint holds no base model weight (it names the base by path and
    content hash) and is an artifact of its MLflow run. Stopped at step 2, its base model moved: the resume and
    eval are refused in one line saying what to do, and so is a folder holding another model; naming the new folder
    resumes it, bit-identical to the uninterrupted 4-step run."""
    import shutil

    from mlflow import MlflowClient

    from lit_nash.games.token import token_game
    from lit_nash.models import tiny_causal_lm
    from tests.cli import run_many

    words = token_game().vocabulary()
    base, other = tiny_causal_lm(tmp_path / "base", words), tiny_causal_lm(tmp_path / "other", words, seed=1)
    settings = ["task=token_game", "policy=causal_lm_lora", f"policy.model_path={base}", *QUIET]
    for folder in ("full", "first"):
        (tmp_path / folder).mkdir()
    (full, first) = run_many((("fit", *settings, "trainer.max_steps=4"), {"cwd": tmp_path / "full"}),
                             (("fit", *settings, "trainer.max_steps=2"), {"cwd": tmp_path / "first"}))
    assert full.returncode == 0 and first.returncode == 0, (full.stderr[-2000:], first.stderr[-2000:])
    expected, ckpt = (torch.load(only_checkpoint(tmp_path / d), map_location="cpu", weights_only=True)
                      for d in ("full", "first"))
    assert not any(".base_layer." in k or "wte" in k for k in expected["state_dict"])  # adapters only
    record = expected["state_dict"]["network.base_model._extra_state"]["base_model"]
    assert record["path"] == str(base)
    store = MlflowClient(f"sqlite:///{tmp_path / 'full'}/mlruns.db")
    (run,) = store.search_runs([store.get_experiment_by_name("lit_nash").experiment_id])
    assert [a.path for a in store.list_artifacts(run.info.run_id, "checkpoints")] == ["checkpoints/last.ckpt"]

    path = only_checkpoint(tmp_path / "first")
    before = path.read_bytes()
    moved = tmp_path / "moved"
    shutil.move(base, moved)
    refused = run_cli("fit", f"resume={path}", "trainer.max_steps=4", *QUIET, cwd=tmp_path / "first")
    assert refused.returncode != 0
    assert refused.stderr.strip().splitlines()[-1] == (
        f"lit_nash fit: this LoRA run's checkpoint holds only its adapters, trained on the base model '{base}' "
        f"(content hash {record['sha256'][:12]}), and '{base}' is gone: move that model back there, or name its new "
        f"folder: resume={path} ++policy.model_path=<folder> (accepted if its content hash matches)")
    evaluated = run_cli("eval", f"policies=[{path}]", "samples=2", cwd=tmp_path / "first")
    assert evaluated.returncode != 0 and evaluated.stderr.strip().splitlines()[-1].startswith(
        "lit_nash eval: this LoRA run's checkpoint holds only its adapters")
    wrong = run_cli("fit", f"resume={path}", f"++policy.model_path={other}", *QUIET, cwd=tmp_path / "first")
    assert wrong.returncode != 0 and f"and '{other}' holds another model (content hash " in wrong.stderr
    assert path.read_bytes() == before  # nothing was touched
    resumed = run_cli("fit", f"resume={path}", f"++policy.model_path={moved}", "trainer.max_steps=4", *QUIET,
                      cwd=tmp_path / "first")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    got = torch.load(path, map_location="cpu", weights_only=True)
    assert got["global_step"] == 4 and got["lit_nash_config"]["policy"]["model_path"] == str(moved)
    assert got["state_dict"]["network.base_model._extra_state"]["base_model"] == {"path": str(moved), "sha256": record["sha256"]}
    tensors = {k for k, v in expected["state_dict"].items() if torch.is_tensor(v)}
    assert tensors == {k for k, v in got["state_dict"].items() if torch.is_tensor(v)}
    for key in tensors:
        assert torch.equal(got["state_dict"][key], expected["state_dict"][key]), key
    for a, b in zip(got["optimizer_states"][0]["state"].values(), expected["optimizer_states"][0]["state"].values()):
        assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
@pytest.mark.skipif(not SMOLLM2.is_dir(), reason=f"no {SMOLLM2}: build it with "
                    f"python scripts/prepare_real_models.py {REAL_MODELS} (or set LIT_NASH_REAL_MODELS)")
def test_lora_fit_on_smollm2_with_itself_as_judge(tmp_path):
    """Real text on a real instruct model, offline: task=text, the default LoRA, and SmolLM2 as its own
    (weak) LLM judge (preference=judge), since no pairwise classifier for its text ships with the models.
    task=text gives LoRA its pretrained-model learning rate (conf/task_policy/text_causal_lm_lora.yaml)."""
    out = run_cli("fit", "task=text", "algo=egpo", "policy=causal_lm_lora", f"policy.model_path={SMOLLM2}",
                  f"data.path={INSTRUCTIONS}", "preference=judge", f"preference.path={SMOLLM2}",
                  "policy.max_new_tokens=4", "rollout.prompts_per_step=2", "trainer.max_steps=2", *QUIET,
                  cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    checkpoint = torch.load(only_checkpoint(tmp_path), map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 2
    assert checkpoint["lit_nash_config"]["policy"]["optimizer"]["lr"] == 5.0e-5
    assert any("q_proj.lora_A" in k for k in checkpoint["state_dict"])
