"""``python -m lit_nash export``: a trained policy as a Hugging Face model folder, so that it can leave lit_nash.

The folder is what ``AutoModelForCausalLM.from_pretrained``, vLLM, lm-evaluation-harness and AlpacaEval load:
the weights (safetensors), the model's config and generation config, and the tokenizer with its chat template.
``weights=merged`` (the default) writes a full model: a LoRA run's adapter merged into its base model, or a full
fine-tune's own weights. ``weights=adapter`` writes a LoRA run's adapter alone (peft's ``adapter_config.json``
and ``adapter_model.safetensors``), naming its base model by absolute path; transformers with peft installed
loads it with its base. ``lit_nash_export.json`` says where the folder came from (checkpoint, step, MLflow run,
base model and its content hash) and how the policy read its prompts (chat template or plain text).

The folder is written beside ``out`` and renamed into place when complete, so a failed export leaves nothing
half-written. An existing folder with files in it is refused unless ``overwrite=true``. The run's MLflow page
links to the folder: its tag ``export`` names it, and a folder under the artifact limit is logged too.
``fit`` exports at the end of a run when ``export.dir`` is set (conf/fit.yaml).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

WEIGHTS = ("merged", "adapter")
ABOUT = "lit_nash_export.json"  # the folder's record of where it came from
_RUN_ID = re.compile(r"[0-9a-f]{32}")


@hydra.main(version_base="1.3", config_path="pkg://lit_nash.conf", config_name="export")
def main(cfg: DictConfig) -> None:
    export(cfg)


def export(cfg: DictConfig) -> Path:
    """Rebuild the policy of ``cfg.checkpoint`` (a checkpoint file, a run folder or an MLflow run id), write its
    folder to ``cfg.out``, link it from its MLflow run; returns the folder."""
    from lit_nash.tracking import check_store

    out = Path(str(cfg.out)).expanduser().resolve()
    check_choices(str(cfg.weights), cfg.get("dtype"), "export")
    check_out(out, bool(cfg.overwrite), "export", "out", "overwrite=true to replace it")
    check_store(str(cfg.tracking_uri), "tracking_uri", "export")
    path = checkpoint_path(str(cfg.checkpoint), str(cfg.tracking_uri))

    from lit_nash.build import build_trained_network
    from lit_nash.checkpointing import load_checkpoint
    from lit_nash.tracking import RUN_KEY, link_export

    checkpoint = load_checkpoint(path, "export")
    network, config, _ = build_trained_network(checkpoint, "export")
    if not hasattr(network, "tokenizer"):
        raise SystemExit(f"lit_nash export: {str(path)!r} is a tabular policy's checkpoint; only a language-model "
                         "policy (policy=causal_lm or causal_lm_lora) makes a Hugging Face model folder")
    run = checkpoint.get(RUN_KEY) or {}
    about = {"checkpoint": str(path.resolve()), "step": checkpoint.get("global_step"), "mlflow_run_id": run.get("run_id"),
             "algo": str(config.algo.get("_target_", ""))}
    write_model_folder(network, out, str(cfg.weights), cfg.get("dtype"), about)
    linked = link_export(run.get("tracking_uri") or str(cfg.tracking_uri), run.get("run_id"), out)
    print(f"lit_nash export: wrote {out} ({describe(network, str(cfg.weights))}, step {about['step']}){linked}; load it "
          f"with AutoModelForCausalLM.from_pretrained({str(out)!r})")
    return out


def check_choices(weights: str, dtype: str | None, command: str) -> None:
    from lit_nash.models import DTYPES

    if weights not in WEIGHTS:
        raise SystemExit(f"lit_nash {command}: weights={weights!r}; choose merged (a full model folder) or adapter "
                         "(a LoRA run's adapter, naming its base model)")
    if dtype is not None and str(dtype) not in DTYPES:
        raise SystemExit(f"lit_nash {command}: dtype={dtype!r}; choose one of {', '.join(DTYPES)}, or null (the policy's)")


def check_out(out: Path, overwrite: bool, command: str, key: str, fix: str) -> None:
    """An export never writes over a folder with files in it unless asked; a file there is never replaced."""
    if out.exists() and not out.is_dir():
        raise SystemExit(f"lit_nash {command}: {key}={str(out)!r} is a file; give a folder for the model")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise SystemExit(f"lit_nash {command}: {key}={str(out)!r} already exists and is not empty; give a new folder, "
                         f"or {fix}")


def checkpoint_path(spec: str, tracking_uri: str) -> Path:
    """The checkpoint file ``checkpoint=`` names: a file, a run folder (its ``checkpoints/last.ckpt``), or an
    MLflow run id (its tag ``checkpoint``)."""
    from lit_nash.checkpointing import LAST, is_sharded

    path = Path(spec).expanduser()
    for candidate in (path, path / LAST, path / "checkpoints" / LAST):
        if is_sharded(candidate):
            raise SystemExit(f"lit_nash export: {str(candidate)!r} is a distributed (sharded) checkpoint folder; "
                             "consolidate it into one file first: python -m lightning.pytorch.utilities."
                             "consolidate_checkpoint <folder>")
        if candidate.is_file():
            return candidate
    if path.is_dir():
        raise SystemExit(f"lit_nash export: checkpoint={spec!r} is a folder without {LAST} (nor checkpoints/{LAST})")
    if not _RUN_ID.fullmatch(spec):
        raise SystemExit(f"lit_nash export: checkpoint={spec!r} is neither a checkpoint file, a run folder nor an "
                         "MLflow run id (32 hex digits)")
    from lit_nash.tracking import client, get_run

    run = get_run(client(tracking_uri, missing="lit_nash export: no MLflow store at tracking_uri={uri}; give the "
                                               "checkpoint's path, or the store the run went to"), spec)
    if run is None:
        raise SystemExit(f"lit_nash export: no MLflow run {spec} in {tracking_uri}")
    tag = run.data.tags.get("checkpoint")
    if not tag or not Path(tag).is_file():
        raise SystemExit(f"lit_nash export: MLflow run {spec} has no checkpoint on disk (tag checkpoint={tag!r})")
    return Path(tag)


def describe(network, weights: str) -> str:
    if not network.lora:
        return "the fully fine-tuned model"
    return "the LoRA adapter merged into its base model" if weights == "merged" else "the LoRA adapter, naming its base model"


def write_model_folder(network, out: Path, weights: str, dtype: str | None, about: dict[str, Any]) -> None:
    """Write ``network`` (a ``CausalLMPolicy``) to ``out`` as a Hugging Face folder (see the module docstring).
    A merged export merges the adapter into the network's own model: the network is spent afterwards."""
    from lit_nash.checkpointing import replace_path
    from lit_nash.models import quiet_transformers, torch_dtype

    if weights == "adapter" and not network.lora:
        raise SystemExit("lit_nash export: weights=adapter needs a LoRA run (policy=causal_lm_lora); this run "
                         "fine-tuned its whole model: export it with weights=merged")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model = network.model
    if dtype is not None:
        model.to(torch_dtype(str(dtype), "dtype"))
    record = dict(about, weights=weights, lora=network.lora,
                  prompt_format="chat template" if network.codec.chat else "plain text",
                  max_new_tokens=network.max_new_tokens, eos_token_id=network.eos_id, pad_token_id=network.pad_id)
    try:
        with quiet_transformers():
            if network.lora:
                record["base_model"] = network.base_model.record
                if weights == "adapter":
                    for config in model.peft_config.values():  # peft names the base as it was loaded (maybe relative)
                        config.base_model_name_or_path = record["base_model"]["path"]
                else:
                    model = model.merge_and_unload()
            model.save_pretrained(tmp)  # safetensors
            network.tokenizer.save_pretrained(tmp)  # with the chat template
        (tmp / ABOUT).write_text(json.dumps(record, indent=1) + "\n")
        replace_path(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def export_at_end(network, cfg: DictConfig, run_uuid: str, run_id: str | None, step: int) -> None:
    """``fit`` with ``export.dir`` set: the trained network's folder, written when the run finishes."""
    from lit_nash.tracking import link_export

    out = Path(str(cfg.export.dir)).expanduser().resolve()
    about = {"checkpoint": None, "step": step, "mlflow_run_id": run_id, "run_uuid": run_uuid,
             "algo": str(cfg.algo.get("_target_", ""))}
    write_model_folder(network, out, str(cfg.export.weights), None, about)
    linked = link_export(cfg.logger.get("tracking_uri"), run_id, out)
    print(f"lit_nash fit: exported {describe(network, str(cfg.export.weights))} to {out}{linked}", file=sys.stderr)


def check_export_dir(cfg: DictConfig, run_uuid: str) -> None:
    """At ``fit``'s start: ``export.dir`` and ``export.weights`` are valid, and the folder is empty or new, or
    holds this run's own earlier export (a resumed run writes it again)."""
    if not cfg.get("export") or cfg.export.get("dir") is None:
        return
    check_choices(str(cfg.export.weights), None, "fit")
    if str(cfg.export.weights) == "adapter" and not cfg.policy.get("lora"):
        raise SystemExit("lit_nash fit: export.weights=adapter needs a LoRA policy (policy=causal_lm_lora); "
                         "use export.weights=merged")
    if "model_path" not in cfg.policy:
        raise SystemExit("lit_nash fit: export.dir writes a language model's folder; a tabular policy has none: "
                         "set export.dir=null")
    out = Path(str(cfg.export.dir)).expanduser().resolve()
    try:
        own = json.loads((out / ABOUT).read_text()).get("run_uuid") == run_uuid
    except (OSError, ValueError):
        own = False
    if not own:
        check_out(out, False, "fit", "export.dir", "remove it first")
