"""``python -m lit_nash train_preference``: train a text preference model, top to bottom.

The data are rows (prompt, a, b, label) with label = P(a ≻ b | prompt): 1 = a preferred, 0 = b preferred, or a
probability in between (a soft label). The model is the one ``preference=<option>`` loads in ``fit``:

* ``pairwise`` (default): a ``PairwiseClassifier``, p(a, b) = P("first wins" | template(prompt, a, b)); with
  ``train.swap_augment`` every pair is also shown as (b, a) with label 1 − y, so the model does not learn a
  position bias. Evaluation reads the order-averaged P(a ≻ b) = ½[p(a, b) + 1 − p(b, a)] that ``fit`` uses.
* ``bradley_terry``: a ``BradleyTerryReward``, P(a ≻ b) = σ(r(x, a) − r(x, b)) from a 1-label model.
* ``gpm``: a ``GeneralPreferenceModel``, P(a ≻ b) = σ(⟨R(x)·v_a, v_b⟩ / τ); a new head of ``gpm.dim`` outputs
  (and the prompt gate's) is put on the model at ``model_path``, so any sequence-classification (or base) model
  can start. It can fit a cyclic preference, which a Bradley–Terry model cannot.

Its own template, tokenizer and ``encode`` make the training inputs, so the saved model is read at inference
exactly as it was trained. Training minimizes the binary cross-entropy between the label and the model's P(a ≻ b)
(``bradley_terry`` and ``gpm`` are antisymmetric, so a swapped copy adds nothing and is not made); evaluation
calls the model's own ``prob_text``.

Logged to MLflow: ``train/loss`` (BCE), ``eval/loss`` (BCE of the P that ``fit`` reads against the label),
``eval/accuracy`` (P > ½ against label > ½) and ``eval/calibration_error`` (expected calibration error, 15 bins);
ties (label = ½) have no winner and count in ``eval/loss`` only.
"""

from __future__ import annotations

import math
import re
import shlex
import sys
import time
from pathlib import Path

import hydra

from omegaconf import DictConfig, OmegaConf, open_dict

HINTED = ("template", "use_chat_template", "first_label", "max_length")  # keys the fit hint repeats where they differ
TRAINABLE = ("pairwise", "bradley_terry", "gpm")  # preference options this command trains, by their classes below
CLASSES = {"PairwiseClassifier": "pairwise", "BradleyTerryReward": "bradley_terry", "GeneralPreferenceModel": "gpm"}


@hydra.main(version_base="1.3", config_path="pkg://lit_nash.conf", config_name="train_preference")
def main(cfg: DictConfig) -> float:
    from lit_nash.cli import run_folder_settled

    with run_folder_settled():  # a run refused before it wrote anything leaves no run folder
        return train_preference(cfg)


def train_preference(cfg: DictConfig) -> float:
    """Train one classifier and save it; returns the final eval/loss (nan without an eval set)."""
    from lit_nash.preflight import check_start
    from lit_nash.tracking import check_store, marks_run, prepare_store

    check_start(cfg, "train_preference")  # model_path and data.path given, model folders that exist
    check_store(cfg.logger.get("tracking_uri"), "logger.tracking_uri", "train_preference")
    option = CLASSES.get(str(cfg.preference.get("_target_", "")).rsplit(".", 1)[-1])
    if option is None:
        raise ValueError(f"lit_nash train_preference: preference={_choice(cfg)} cannot be trained here; choose "
                         f"preference={', '.join(TRAINABLE[:-1])} or {TRAINABLE[-1]}")
    # the pairs are read and checked before torch is imported: a bad file answers in seconds
    train_set, eval_set = load_pairs(cfg.data, seed=cfg.seed)
    if not cfg.train.swap_augment and (line := position_only(train_set, str(cfg.data.path))):
        print(line, file=sys.stderr)

    import lightning as L
    from torch.utils.data import DataLoader

    from lit_nash.preference import BradleyTerryReward, GeneralPreferenceModel, PairwiseClassifier
    from lit_nash.preference.training import BradleyTerryTraining, GPMTraining, PairwiseTraining
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    from lit_nash.build import build_logger

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    common = dict(tokenizer_path=cfg.tokenizer_path, template=cfg.template, use_chat_template=cfg.use_chat_template,
                  max_length=cfg.max_length, trust_remote_code=cfg.trust_remote_code,
                  allow_new_weights=True)  # a base model's new head is what this command trains
    if option == "pairwise":  # an eval batch reads both orders in one forward
        judge = PairwiseClassifier(cfg.model_path, first_label=cfg.first_label,
                                   batch_size=2 * cfg.train.eval_batch_size, **common)
        training = PairwiseTraining
    elif option == "bradley_terry":
        judge = BradleyTerryReward(cfg.model_path, batch_size=2 * cfg.train.eval_batch_size, **common)
        training = BradleyTerryTraining
    else:
        judge = GeneralPreferenceModel(cfg.model_path, new_head=OmegaConf.to_container(cfg.gpm),
                                       batch_size=2 * cfg.train.eval_batch_size, **common)
        training = GPMTraining
    module = training(judge, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay, swap_augment=cfg.train.swap_augment)
    loader = dict(num_workers=cfg.data.num_workers, persistent_workers=cfg.data.num_workers > 0)
    train_loader = DataLoader(train_set, batch_size=cfg.train.batch_size, shuffle=True, drop_last=False, **loader)
    eval_loader = None if eval_set is None else DataLoader(eval_set, batch_size=cfg.train.eval_batch_size, **loader)

    tags = {"command": "train_preference", "preference": option, "model": Path(cfg.model_path).name, "data": Path(cfg.data.path).name,
            "seed": str(cfg.seed)}
    if rank_zero_only.rank == 0:  # runs starting at once create a new sqlite store one at a time
        prepare_store(cfg.logger.get("tracking_uri"), cfg.logger.get("experiment_name"), "logger.tracking_uri",
                      "train_preference")
    logger = build_logger(cfg, tags=tags,
                         run_name=cfg.logger.get("run_name") or f"train_preference-{tags['model']}-seed{cfg.seed}")
    # the run exists from log_hyperparams on; a signal or an error marks it KILLED or FAILED
    with marks_run(lambda: (logger._mlflow_client, getattr(logger, "_run_id", None)), "train_preference"):
        return _train(cfg, option, logger, judge, module, train_set, eval_set, train_loader, eval_loader)


def _train(cfg, option, logger, judge, module, train_set, eval_set, train_loader, eval_loader) -> float:
    import lightning as L

    from lit_nash.build import build_trainer
    from lit_nash.tracking import flat_params

    trainer: L.Trainer = build_trainer(cfg, logger=logger)
    with open_dict(cfg):  # the option's fit config, as logged: its path is the model trained
        cfg.preference.path = cfg.model_path
    logger.log_hyperparams(flat_params(OmegaConf.to_container(cfg, resolve=True)))

    start = time.perf_counter()
    from lit_nash.cli import training_started

    training_started()  # a failure from here on keeps the run folder, marked FAILED (lit_nash.cli)
    trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=eval_loader)
    if eval_loader is not None and module.evaluated_at != trainer.global_step:
        trainer.validate(module, dataloaders=eval_loader, verbose=False)  # the final model, logged at the last step
    seconds = time.perf_counter() - start
    final = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("eval/")}

    if trainer.is_global_zero:
        save_dir = Path(cfg.save_dir).resolve()
        from lit_nash.models import quiet_transformers

        with quiet_transformers():  # no "Writing model shards" bar
            judge.model.save_pretrained(save_dir)  # safetensors
        judge.tokenizer.save_pretrained(save_dir)  # with the PAD the classifier chose, so inference pads the same
        hint = [f"python -m lit_nash fit preference={option}", f"preference.path={save_dir}"]
        # the keys where what was trained differs from what fit's preference=<option> reads by default
        hint += [f"preference.{k}={_override(cfg[k])}" for k in HINTED if k in cfg.preference and cfg[k] != cfg.preference[k]]
        metrics = " ".join(f"{k}={v:.3g}" for k, v in sorted(final.items())) or "no eval set"
        line = (f"lit_nash train_preference: {len(train_set)} pairs ({0 if eval_set is None else len(eval_set)} eval), "
                f"{trainer.global_step} steps in {seconds:.1f}s | {metrics}")
        if logger.run_id:
            line += f" | MLflow run {logger.run_id}: mlflow ui --backend-store-uri {cfg.logger.tracking_uri}"
        print(f"{line} | saved {save_dir}; use it with: {hint[0]} {' '.join(_shell(h) for h in hint[1:])} ...")
    return final.get("eval/loss", math.nan)


# -- data -------------------------------------------------------------------------------------------------------


def load_pairs(data: DictConfig, seed: int):
    """The training and eval pairs, each a ``datasets.Dataset`` with columns prompt, a, b (str) and label
    (float in [0, 1]) in torch format; eval is None when there is no eval_path and eval_fraction is 0."""
    train = check_pairs(*read_table(data.path, data.split, data.cache_dir, "path"), data)
    if data.eval_path is not None:
        return train, check_pairs(*read_table(data.eval_path, data.eval_split, data.cache_dir, "eval_path"), data)
    if not 0 <= data.eval_fraction < 1:
        raise ValueError(f"data.eval_fraction must be in [0, 1), got {data.eval_fraction}")
    if data.eval_fraction == 0:
        return train, None
    n_eval = max(1, round(data.eval_fraction * len(train)))
    if n_eval >= len(train):
        raise ValueError(f"data.path {data.path}: {len(train)} pairs are too few to hold out {data.eval_fraction:g} "
                         "for eval; give more pairs, data.eval_path, or data.eval_fraction=0")
    split = train.train_test_split(test_size=n_eval, seed=seed)
    return split["train"], split["test"]


def position_only(pairs, where: str) -> str | None:
    """The warning for training pairs whose every decided label prefers the same place (all "a wins" or all
    "b wins") without ``train.swap_augment``: the place is then all there is to learn."""
    labels = [float(v) for v in pairs.with_format(None)["label"]]
    decided = [v for v in labels if v != 0.5]
    if not decided or (any(v > 0.5 for v in decided) and any(v < 0.5 for v in decided)):
        return None
    first = decided[0] > 0.5
    return (f"lit_nash train_preference: warning: every decided label of data.path {where!r} prefers the "
            f"{'first' if first else 'second'} response ({'a' if first else 'b'}, label {'>' if first else '<'} 0.5, in "
            f"all {len(decided)} of {len(labels)} training pairs) and train.swap_augment=false: the only thing the "
            f"classifier can learn is \"the {'first' if first else 'second'} response wins\", not which response is "
            "better. Set train.swap_augment=true (each pair is also shown swapped), or give pairs with the preferred "
            "response in both places")


def read_table(path: str, split: str, cache_dir: str | None, key: str):
    """The table and a description of where it came from, for error messages."""
    from lit_nash.tables import load_table

    return load_table(path, split=split, cache_dir=cache_dir, key=f"data.{key}"), f"data.{key} {str(path)!r}"


def check_pairs(table, where: str, data: DictConfig):
    """Check the columns and labels, and rename the columns to prompt, a, b, label."""
    import numpy as np
    from datasets import Value

    columns = {"prompt": data.prompt_column, "a": data.a_column, "b": data.b_column, "label": data.label_column}
    columns = {k: v for k, v in columns.items() if v is not None or k == "prompt"}
    missing = [f"{v!r} (data.{k}_column)" for k, v in columns.items() if v is not None and v not in table.column_names]
    if missing:
        raise ValueError(f"{where}: column(s) {', '.join(missing)} not found; the columns are {table.column_names}")
    for key in ("prompt", "a", "b"):
        name = columns[key]
        if name is None:
            continue
        feature = table.features[name]
        if table.data.column(name).null_count:
            row = list(table[name]).index(None)
            raise ValueError(f"{where}: column {name!r} (data.{key}_column) has no text at row {row} (0-based)")
        if not (isinstance(feature, Value) and feature.dtype in ("string", "large_string")):
            raise ValueError(f"{where}: column {name!r} (data.{key}_column) must hold text, found {feature}")
    name = columns["label"]
    feature = table.features[name]
    dtype = feature.dtype if isinstance(feature, Value) else ""
    if not (dtype == "bool" or dtype.startswith(("int", "uint", "float"))):
        raise ValueError(f"{where}: column {name!r} (data.label_column) must hold numbers P(a ≻ b) in [0, 1] "
                         f"(1 = a preferred), found {feature}")
    raw = list(table[name])
    labels = np.array([math.nan if v is None else v for v in raw], dtype=np.float64)
    bad = np.flatnonzero(~((labels >= 0) & (labels <= 1)))  # nan (a null) fails both
    if bad.size:
        raise ValueError(f"{where}: column {name!r} (data.label_column) is {raw[bad[0]]!r} at row {bad[0]} (0-based, "
                         f"{bad.size} such rows); a label is P(a ≻ b) in [0, 1]: 1 = a preferred, 0 = b preferred")

    used = list(dict.fromkeys(v for v in columns.values() if v is not None))

    def standard(batch):
        n = len(batch[columns["a"]])
        prompts = batch[columns["prompt"]] if columns["prompt"] is not None else [""] * n
        return {"prompt": prompts, "a": batch[columns["a"]], "b": batch[columns["b"]],
                "label": [float(v) for v in batch[columns["label"]]]}

    table = table.select_columns(used).map(standard, batched=True, remove_columns=used)
    return table.with_format("torch", columns=["label"], output_all_columns=True)


def _choice(cfg: DictConfig) -> str:
    """The preference option picked on the command line (or its target outside Hydra)."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return str(HydraConfig.get().runtime.choices.get("preference"))
    return str(cfg.preference.get("_target_"))


def _shell(arg: str) -> str:
    """One shell word, quoted only when needed (double quotes keep a Hydra override's single quotes readable)."""
    if re.fullmatch(r"[\w./=:@%+,-]+", arg):
        return arg
    return f'"{arg}"' if not set('"$`\\!') & set(arg) else shlex.quote(arg)


def _override(value) -> str:
    """A config value as a Hydra override value (quoted when it holds spaces or braces)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    text = str(value)
    if not any(c in text for c in " {}[](),:='\"\\$"):
        return text
    return "'" + text.replace("'", "\\'") + "'"
