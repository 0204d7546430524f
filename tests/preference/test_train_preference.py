"""``python -m lit_nash train_preference`` end to end: the real CLI, datasets, Lightning Trainer and MLflow store,
on a tiny random-init GPT-2 classifier and a synthetic preference that it can learn.

The preference: each of ten words has a hidden score in [-1, 1]; a response is 1–3 words and its score is the
sum; a beats b when its score is higher (hard labels, ties left out), or with probability σ(4·(s(a) − s(b)))
(soft labels). The model has to learn the scores and add them up on each side of the template.
"""

import json
import math
import random
import re

import pytest
import torch
from mlflow import MlflowClient
from omegaconf import OmegaConf

from lit_nash.models import tiny_sequence_classifier
from lit_nash.preference import PairwiseClassifier
from lit_nash.train_preference import load_pairs

from ..cli import REPO, run_cli

CONTENT = "sun gold rose kind calm mud rust rain cold dust".split()
SCORE = dict(zip(CONTENT, [1.0, 0.8, 0.6, 0.4, 0.2, -0.2, -0.4, -0.6, -0.8, -1.0]))
PROMPTS = "tell write say give".split()
WORDS = CONTENT + PROMPTS + ["[", "SEP", "]"]  # the default template "{prompt} [SEP] {a} [SEP] {b}"
CONF = REPO / "conf" / "train_preference.yaml"
FAST = ["trainer.enable_progress_bar=false", "train.batch_size=32", "train.lr=1e-3", "trainer.val_check_interval=50"]


def pairs(n: int, seed: int, soft: bool = False, exclude: set = frozenset()) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    while len(rows) < n:
        a = " ".join(rng.choices(CONTENT, k=rng.randint(1, 3)))
        b = " ".join(rng.choices(CONTENT, k=rng.randint(1, 3)))
        d = sum(SCORE[w] for w in a.split()) - sum(SCORE[w] for w in b.split())
        if abs(d) < 1e-9 or (a, b) in exclude or (b, a) in exclude:
            continue
        label = 1 / (1 + math.exp(-4 * d)) if soft else float(d > 0)
        rows.append({"prompt": rng.choice(PROMPTS), "a": a, "b": b, "label": label})
    return rows


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    return tiny_sequence_classifier(tmp_path_factory.mktemp("clf") / "clf", WORDS, num_labels=2, seed=0)


@pytest.fixture(scope="module", params=["hard", "soft"])
def trained(request, classifier, tmp_path_factory):
    """One run per label kind: hard labels with a held-out 10% split, soft labels with a separate eval file."""
    soft = request.param == "soft"
    root = tmp_path_factory.mktemp(request.param)
    train = pairs(2000, seed=1, soft=soft)
    args = [f"data.path={write_jsonl(root / 'train.jsonl', train)}", f"model_path={classifier}",
            f"data.cache_dir={root / 'cache'}", "trainer.max_steps=170", *FAST]
    if soft:
        args.append(f"data.eval_path={write_jsonl(root / 'eval.jsonl', pairs(200, seed=2, soft=True))}")
    out = run_cli("train_preference", *args, cwd=root)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = [line for line in out.stdout.splitlines() if line.startswith("lit_nash train_preference:")]
    assert len(summary) == 1, out.stdout[-3000:]
    saved = summary[0].split("| saved ")[1].split(";")[0]
    assert summary[0].endswith(f"use it with: python -m lit_nash fit preference=pairwise preference.path={saved} ...")
    return {"root": root, "saved": saved, "train": train, "summary": summary[0]}


def test_eval_metrics_are_logged_to_mlflow_during_and_at_the_end(trained):
    client = MlflowClient(f"sqlite:///{trained['root'] / 'mlruns.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("lit_nash_preference").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["trainer.max_steps"] == "170"
    history = {k: sorted(client.get_metric_history(run.info.run_id, k), key=lambda m: m.step)
               for k in ("eval/accuracy", "eval/calibration_error", "eval/loss", "train/loss")}
    assert [m.step for m in history["eval/accuracy"]] == [49, 99, 149, 170]  # every 50 steps, and the final model
    assert [m.step for m in history["eval/calibration_error"]] == [49, 99, 149, 170]
    assert history["eval/accuracy"][-1].value > 0.85 and history["eval/calibration_error"][-1].value < 0.15
    assert history["eval/loss"][-1].value < history["eval/loss"][0].value
    assert f"eval/accuracy={history['eval/accuracy'][-1].value:.3g}" in trained["summary"]


def test_saved_model_loads_as_the_pairwise_preference_and_ranks_new_pairs(trained):
    """Accuracy on 400 new pairs (in neither order in the training data), measured with these settings: 0.958
    (hard labels), 0.993 (soft labels); 0.96–1.00 over model seeds 0–2 and training seeds 0–2 (8 runs); the
    untrained model scores 0.35–0.47. The threshold 0.85 leaves room for other platforms.
    This file takes ~50 s on 1 core."""
    pref = PairwiseClassifier(trained["saved"], batch_size=256)
    seen = {(r["a"], r["b"]) for r in trained["train"]}
    new = pairs(400, seed=3, exclude=seen)
    prompts, a, b = ([r[k] for r in new] for k in ("prompt", "a", "b"))
    p, q = pref.prob_text(prompts, a, b), pref.prob_text(prompts, b, a)
    assert (p + q - 1).abs().max() <= 1e-6
    labels = torch.tensor([r["label"] for r in new])
    accuracy = ((p > 0.5).float() == labels).float().mean().item()
    assert accuracy >= 0.85, accuracy


@pytest.mark.parametrize(
    "rows,message",
    [
        ([{"prompt": "tell", "chosen": "sun", "rejected": "mud", "label": 1}],
         ["'a' (data.a_column), 'b' (data.b_column) not found", "['prompt', 'chosen', 'rejected', 'label']"]),
        ([], ["train.jsonl", "is empty"]),
        ([{"prompt": "tell", "a": "sun", "b": "mud", "label": 1}, {"prompt": "x", "a": "sun", "b": "mud", "label": 2}],
         ["column 'label' (data.label_column) is 2 at row 1", "in [0, 1]"]),
    ],
    ids=["missing_columns", "empty_file", "label_out_of_range"],
)
def test_bad_data_exits_non_zero_naming_the_problem(tmp_path, classifier, rows, message):
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    out = run_cli("train_preference", f"data.path={path}", f"model_path={classifier}",
                  f"data.cache_dir={tmp_path / 'cache'}", cwd=tmp_path)
    assert out.returncode != 0
    for part in message:
        assert part in out.stderr, out.stderr[-2000:]


def data_config(path, **overrides):
    return OmegaConf.merge(OmegaConf.load(CONF)["data"], {"path": str(path), "cache_dir": None}, overrides)


@pytest.mark.parametrize(
    "rows,message",
    [
        ([{"prompt": "x", "a": "sun", "b": "mud", "label": 1}, {"prompt": "x", "a": "sun", "b": None, "label": 1}],
         "column 'b' (data.b_column) has no text at row 1"),
        ([{"prompt": "x", "a": "sun", "b": 3, "label": 1}],
         "column 'b' (data.b_column) must hold text, found Value('int64')"),
        ([{"prompt": "x", "a": "sun", "b": "mud", "label": "yes"}], "must hold numbers P(a ≻ b) in [0, 1]"),
        ([{"prompt": "x", "a": "sun", "b": "mud", "label": 1}, {"prompt": "x", "a": "sun", "b": "mud", "label": None}],
         "is None at row 1"),
        ([{"prompt": "x", "a": "sun", "b": "mud", "label": -0.5}], "is -0.5 at row 0 (0-based, 1 such rows)"),
    ],
    ids=["null_text", "number_text", "string_label", "null_label", "negative_label"],
)
def test_bad_rows_are_named_before_any_model_loads(tmp_path, rows, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        load_pairs(data_config(write_jsonl(tmp_path / "t.jsonl", rows), cache_dir=str(tmp_path / "cache")), seed=0)


def test_columns_are_renamed_and_a_missing_prompt_column_means_empty_prompts(tmp_path):
    rows = [{"chosen": f"w{i}", "other": "x", "p": i / 10} for i in range(10)]
    cfg = data_config(write_jsonl(tmp_path / "t.jsonl", rows), cache_dir=str(tmp_path / "cache"), prompt_column=None,
                      a_column="chosen", b_column="other", label_column="p", eval_fraction=0.2)
    train, held_out = load_pairs(cfg, seed=0)
    assert (len(train), len(held_out)) == (8, 2) and set(train.column_names) == {"prompt", "a", "b", "label"}
    row = train[0]
    assert row["prompt"] == "" and row["b"] == "x" and row["label"] == pytest.approx(int(row["a"][1:]) / 10)
    assert isinstance(row["label"], torch.Tensor)
