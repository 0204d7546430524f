"""``python -m lit_nash train_preference``: train a pairwise preference classifier, top to bottom.

The data are rows (prompt, a, b, label) with label = P(a ≻ b | prompt): 1 = a preferred, 0 = b preferred, or a
probability in between (a soft label). The model is a ``PairwiseClassifier`` (``preference=pairwise``): its own
template, tokenizer, ``first_label`` and ``encode`` make the training inputs, so the saved model is read at
inference exactly as it was trained. Training minimizes the binary cross-entropy between the label and
p(a, b) = P("first wins" | template(prompt, a, b)); with ``train.swap_augment`` every pair is also shown as
(b, a) with label 1 − y, so the model does not learn a position bias. Evaluation calls the classifier's own
``prob_text``, the order-averaged P(a ≻ b) = ½[p(a, b) + 1 − p(b, a)] that ``fit`` will use.

Logged to MLflow: ``train/loss`` (per-order BCE), ``eval/loss`` (BCE of the order-averaged P against the
label), ``eval/accuracy`` (P > ½ against label > ½) and ``eval/calibration_error`` (expected calibration
error, 15 bins); ties (label = ½) have no winner and count in ``eval/loss`` only.
"""

from __future__ import annotations

import math
import re
import shlex
import time
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}  # datasets' builder per suffix
DEFAULTS = {"template": None, "use_chat_template": False, "first_label": 0, "max_length": None}  # PairwiseClassifier's


@hydra.main(version_base="1.3", config_path="pkg://lit_nash.conf", config_name="train_preference")
def main(cfg: DictConfig) -> float:
    return train_preference(cfg)


def train_preference(cfg: DictConfig) -> float:
    """Train one classifier and save it; returns the final eval/loss (nan without an eval set)."""
    # the pairs are read and checked before torch is imported: a bad file answers in seconds
    train_set, eval_set = load_pairs(cfg.data, seed=cfg.seed)

    import lightning as L
    from torch.utils.data import DataLoader

    from lit_nash.preference import PairwiseClassifier
    from lit_nash.tracking import flat_params

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    judge = PairwiseClassifier(
        cfg.model_path,
        tokenizer_path=cfg.tokenizer_path,
        template=cfg.template,
        use_chat_template=cfg.use_chat_template,
        first_label=cfg.first_label,
        batch_size=2 * cfg.train.eval_batch_size,  # an eval batch reads both orders in one forward
        max_length=cfg.max_length,
        trust_remote_code=cfg.trust_remote_code,
    )
    module = pairwise_training_class()(
        judge, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay, swap_augment=cfg.train.swap_augment
    )
    loader = dict(num_workers=cfg.data.num_workers, persistent_workers=cfg.data.num_workers > 0)
    train_loader = DataLoader(train_set, batch_size=cfg.train.batch_size, shuffle=True, drop_last=False, **loader)
    eval_loader = None if eval_set is None else DataLoader(eval_set, batch_size=cfg.train.eval_batch_size, **loader)

    tags = {"command": "train_preference", "model": Path(cfg.model_path).name, "data": Path(cfg.data.path).name,
            "seed": str(cfg.seed)}
    logger = instantiate(cfg.logger, tags=tags,
                         run_name=cfg.logger.get("run_name") or f"train_preference-{tags['model']}-seed{cfg.seed}")
    trainer: L.Trainer = instantiate(cfg.trainer, logger=logger)
    logger.log_hyperparams(flat_params(OmegaConf.to_container(cfg, resolve=True)))

    start = time.perf_counter()
    trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=eval_loader)
    if eval_loader is not None and module.evaluated_at != trainer.global_step:
        trainer.validate(module, dataloaders=eval_loader, verbose=False)  # the final model, logged at the last step
    seconds = time.perf_counter() - start
    final = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("eval/")}

    if trainer.is_global_zero:
        save_dir = Path(cfg.save_dir).resolve()
        judge.model.save_pretrained(save_dir)  # safetensors
        judge.tokenizer.save_pretrained(save_dir)  # with the PAD the classifier chose, so inference pads the same
        hint = ["python -m lit_nash fit preference=pairwise", f"preference.path={save_dir}"]
        hint += [f"preference.{k}={_override(cfg[k])}" for k, v in DEFAULTS.items() if cfg[k] != v]
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


def read_table(path: str, split: str, cache_dir: str | None, key: str):
    """``datasets.load_dataset`` of a local file (format from its suffix), a data folder or a hub dataset;
    returns the dataset and a description of where it came from, for error messages."""
    from datasets import load_dataset

    file = Path(str(path)).expanduser()
    if file.is_file() or file.suffix.lower() in FORMATS:
        builder = FORMATS.get(file.suffix.lower())
        if builder is None:
            raise ValueError(f"data.{key} {str(file)!r}: unknown file type {file.suffix!r}; "
                             "use .jsonl, .json, .parquet or .csv")
        if not file.is_file():
            raise FileNotFoundError(f"data.{key} {str(file)!r} does not exist")
        where = f"data.{key} {str(file)!r}"
        if file.stat().st_size == 0 or (file.stat().st_size < 4096 and not file.read_bytes().strip()):
            raise ValueError(f"{where} is empty: no pairs to train on")
        try:
            table = load_dataset(builder, data_files=str(file), split="train", cache_dir=cache_dir)
        except Exception as e:  # datasets' errors on malformed files do not name the file
            raise ValueError(f"{where}: could not read it as {builder}: {type(e).__name__}: {e}") from e
    else:  # a folder of data files, or a dataset on the hub
        where = f"data.{key} {str(path)!r} (split {split!r})"
        table = load_dataset(str(path), split=split, cache_dir=cache_dir)
    if len(table) == 0:
        raise ValueError(f"{where} has no rows: no pairs to train on")
    return table, where


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


# -- the LightningModule ------------------------------------------------------------------------------------------


def pairwise_training_class():
    """The LightningModule that trains a ``PairwiseClassifier``'s own model (built frozen, as a judge).

    Defined on the first call, once lightning is imported, so that ``--help`` and data errors answer without
    torch; then kept as the module attribute ``PairwiseTraining``, so that it pickles (``ddp_spawn``).
    """
    if "PairwiseTraining" in globals():
        return globals()["PairwiseTraining"]
    import lightning as L
    import torch
    import torch.nn.functional as F
    from torchmetrics.classification import BinaryAccuracy, BinaryCalibrationError

    class PairwiseTraining(L.LightningModule):
        def __init__(self, judge, lr: float, weight_decay: float = 0.0, swap_augment: bool = True):
            super().__init__()
            self.judge = judge
            judge.model.requires_grad_(True).train()  # the judge is frozen for fit; here it learns
            self.lr, self.weight_decay, self.swap_augment = float(lr), float(weight_decay), bool(swap_augment)
            self.accuracy = BinaryAccuracy()
            self.calibration = BinaryCalibrationError(n_bins=15, norm="l1")
            self.evaluated_at = -1  # the global step of the last evaluation

        def first_wins_logit(self, prompts, a, b):
            """log P(first wins) − log P(not first wins): its sigmoid is ``text.first_wins`` of the logits."""
            texts = [self.judge.render(x, a=y, b=z) for x, y, z in zip(prompts, a, b)]
            logits = self.judge.model(**self.judge.encode(texts)).logits.float()
            if logits.shape[-1] == 1:
                return logits[:, 0]
            k = self.judge.first_label
            return logits[:, k] - torch.cat([logits[:, :k], logits[:, k + 1 :]], dim=-1).logsumexp(-1)

        def training_step(self, batch, batch_idx):
            prompts, a, b, y = batch["prompt"], batch["a"], batch["b"], batch["label"].float()
            if self.swap_augment:
                prompts, a, b, y = prompts + prompts, a + b, b + a, torch.cat([y, 1.0 - y])
            loss = F.binary_cross_entropy_with_logits(self.first_wins_logit(prompts, a, b), y)
            self.log("train/loss", loss, batch_size=len(y), prog_bar=True)
            return loss

        def validation_step(self, batch, batch_idx):
            y = batch["label"].float()
            p = self.judge.prob_text(batch["prompt"], batch["a"], batch["b"]).to(y.device)  # what fit will read
            loss = F.binary_cross_entropy(p.double().clamp(1e-7, 1 - 1e-7), y.double())
            self.log("eval/loss", loss, batch_size=len(y), prog_bar=True)
            decided = y != 0.5  # a tie has no winner: it counts in eval/loss only
            if decided.any():
                self.accuracy.update(p[decided], y[decided] > 0.5)
                self.calibration.update(p[decided], y[decided] > 0.5)
            self.log("eval/accuracy", self.accuracy, batch_size=len(y), prog_bar=True)
            self.log("eval/calibration_error", self.calibration, batch_size=len(y))

        def on_validation_epoch_end(self):
            self.evaluated_at = self.global_step

        def configure_optimizers(self):
            params = [p for p in self.judge.model.parameters() if p.requires_grad]
            return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)

    PairwiseTraining.__qualname__ = "PairwiseTraining"
    globals()["PairwiseTraining"] = PairwiseTraining
    return PairwiseTraining


def __getattr__(name: str):
    if name == "PairwiseTraining":  # lit_nash.train_preference.PairwiseTraining, and unpickling it
        return pairwise_training_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
