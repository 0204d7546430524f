"""Refusals of issue 25 through the real CLI: each is one line that names the key or the file and the fix, before
anything is built (or, for what only a loaded model can tell, while it is built, as the last line of Hydra's
report), and nothing an earlier run left is touched.

- a preference model without trained weights (a bare encoder: its classification head would be random);
- a judge whose tokenizer is another model's (same size, other special tokens);
- a prompt that fits the policy but not the preference model's positions;
- ``generator=vllm`` where vLLM cannot be imported, and with several training processes;
- a model path that looks local and does not exist, for the policy, the classifier, the judge and a tokenizer;
- a working folder nobody can write;
- override mistakes: ``--algo=egpo``, ``eta=2``, ``algo.etaa=2``, ``task=text`` without its paths;
- and a warning, not a refusal: ``train_preference`` on one-sided labels without ``train.swap_augment``.

One good short run goes first in the shared folder (its MLflow run and checkpoint are checked unchanged at the
end), then every case runs there, two at a time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .cli import REPO, check_refused, run_cli, run_many
from .test_bad_inputs import CLASSIFIER_WORDS, WORDS, checkpoints, mlflow_snapshot

ENV = {"HYDRA_FULL_ERROR": "0"}
QUIET = ["trainer.enable_progress_bar=false"]
LONG = " ".join(["red"] * 100)  # 101 tokens with its BOS: beyond a 64-position model


def tiny_encoder(directory: Path, words: list[str]) -> Path:
    """A bare BERT encoder (``BertModel``: no classification head) and its tokenizer, as a sentence-embedding
    model such as all-MiniLM-L6-v2 is saved."""
    import torch
    from transformers import BertConfig, BertModel

    from lit_nash.models import build_tokenizer

    tokenizer = build_tokenizer(words)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        BertModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def foreign_tokenizer(directory: Path, words: list[str]) -> Path:
    """A word-level tokenizer of the same size as ``build_tokenizer(words)``'s, another model's: its words
    come first and its special tokens last, so [PAD], [BOS] and [EOS] have other ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from lit_nash.models import SPECIAL_TOKENS

    vocab = {w: i for i, w in enumerate(list(dict.fromkeys(words)) + list(SPECIAL_TOKENS.values()))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL_TOKENS["unk_token"]))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, **SPECIAL_TOKENS).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    from lit_nash.models import tiny_causal_lm, tiny_sequence_classifier

    root = tmp_path_factory.mktemp("refusals").resolve()
    good = run_cli("fit", "game=weighted_rps", "trainer.max_steps=2", *QUIET, cwd=root, env=ENV)
    assert good.returncode == 0, good.stderr[-3000:]
    m, d = root / "models", root / "data"
    paths = {
        "policy": tiny_causal_lm(m / "policy", WORDS, seed=1),  # 64 positions
        "pairwise": tiny_sequence_classifier(m / "pairwise", CLASSIFIER_WORDS, seed=2),  # 128 positions
        "short_pairwise": tiny_sequence_classifier(m / "short_pairwise", CLASSIFIER_WORDS, seed=3, max_positions=64),
        "judge": tiny_causal_lm(m / "judge", WORDS, seed=4),
        "encoder": tiny_encoder(m / "encoder", CLASSIFIER_WORDS),
        "foreign_tokenizer": foreign_tokenizer(m / "foreign_tokenizer", CLASSIFIER_WORDS),
        "no_vllm": root / "no_vllm",
    }
    d.mkdir()
    (d / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ["say hello", "name a colour"]))
    (d / "long.jsonl").write_text(json.dumps({"prompt": "say hello"}) + "\n" + json.dumps({"prompt": LONG}) + "\n")
    pairs = [{"prompt": "name a colour", "a": a, "b": b, "label": 1.0} for a, b in
             [("red", "cat"), ("blue", "dog"), ("green", "big"), ("red", "small"), ("blue", "cat"), ("green", "dog")]]
    (d / "first_wins.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    paths.update(prompts=d / "prompts.jsonl", long=d / "long.jsonl", first_wins=d / "first_wins.jsonl")
    paths["no_vllm"].mkdir()  # a Python start-up hook that makes `import vllm` fail, as where it is not installed
    (paths["no_vllm"] / "sitecustomize.py").write_text("import sys\nsys.modules['vllm'] = None\n")

    before = {"checkpoints": checkpoints(root), "mlflow": mlflow_snapshot(root)}
    paths = {k: str(v) for k, v in paths.items()}
    calls = []
    for case, args, _ in CASES:
        env = {**ENV, "PYTHONPATH": os.pathsep.join([paths["no_vllm"], str(REPO)])} if case == "vllm_not_installed" else ENV
        calls.append(([a.format(**paths) for a in args], {"cwd": root, "env": env}))
    done = run_many(*calls)
    return root, paths, before, {case[0]: out for case, out in zip(CASES, done)}


def text(*overrides: str) -> list[str]:
    """A text run on the shared prompts, tiny policy (64 positions) and pairwise classifier (128)."""
    return ["fit", "task=text", "data.path={prompts}", "policy.model_path={policy}", "preference.path={pairwise}",
            "policy.max_new_tokens=6", "trainer.max_steps=1", *QUIET, *overrides]


VLLM = ["task=token_game", "generator=vllm", "trainer.max_steps=1"]
# (id, command line, substrings of stderr)
CASES = [
    # 4. a model without trained weights as the preference model
    ("preference_head_untrained", text("preference.path={encoder}"),
     ["PairwiseClassifier: preference.path '{encoder}' is not a trained preference model: it has no classifier.bias, "
      "classifier.weight, which would be initialized at random", "python -m lit_nash train_preference model_path={encoder}"]),
    # 5. a tokenizer that is not the model's own
    ("preference_tokenizer_not_its_own", text("preference.tokenizer_path={foreign_tokenizer}"),
     ["preference.tokenizer_path '{foreign_tokenizer}' is not the tokenizer of the model in '{pairwise}'",
      "BOS is id 1 in the model's config but '[BOS]' = id", "use the model's own tokenizer"]),
    # 7. the preference model's context, where the policy's fits (its prompts cut to 40 tokens)
    ("preference_context", text("data.path={long}", "preference.path={short_pairwise}", "policy.max_prompt_tokens=40"),
     ["PairwiseClassifier: prompt 1 ('red red red", "with 2 response(s) of up to policy.max_new_tokens=6 tokens needs",
      "but the model in '{short_pairwise}' has 64 (max_position_embeddings); set preference.max_length=64"]),
    ("preference_max_length_beyond_context", text("preference.path={short_pairwise}", "preference.max_length=100"),
     ["preference.max_length=100 is beyond the 64 positions of the model in '{short_pairwise}'; set it to at most 64"]),
    # 8. generator=vllm that cannot run
    ("vllm_not_installed", ["fit", *VLLM],
     ["lit_nash fit: generator=vllm needs vLLM, which is not installed here", "or sample with generator=hf"]),
    # 9. a local-looking model path that does not exist: never sent to the hub
    ("policy_path_mistyped", text("policy.model_path=models/polic"),
     ["lit_nash fit: policy.model_path='models/polic' does not exist: '{root}/models' has no folder 'polic'; "
      "did you mean policy.model_path=models/policy?"]),
    ("preference_path_mistyped", text("preference.path=models/pairwis"),
     ["lit_nash fit: preference.path='models/pairwis' does not exist", "did you mean preference.path=models/pairwise?"]),
    ("judge_path_mistyped", text("preference=judge", "preference.path=models/judg"),
     ["lit_nash fit: preference.path='models/judg' does not exist", "did you mean preference.path=models/judge?"]),
    ("tokenizer_path_mistyped", text("preference.tokenizer_path=models/pairwise_tokenizer"),
     ["lit_nash fit: preference.tokenizer_path='models/pairwise_tokenizer' does not exist"]),
    ("train_preference_path_mistyped", ["train_preference", "model_path=models/pairwis", "data.path={first_wins}"],
     ["lit_nash train_preference: model_path='models/pairwis' does not exist",
      "did you mean model_path=models/pairwise?"]),
    # 11. override mistakes
    ("dashed_override", ["fit", "--algo=egpo"],
     ["lit_nash fit: '--algo=egpo' is not an option: overrides are written without dashes: algo=egpo"]),
    ("group_key_at_the_top", ["fit", "eta=2"], ["lit_nash fit: fit has no key 'eta' (from 'eta=2'); did you mean algo.eta=2?"]),
    ("key_typo", ["fit", "algo.etaa=2"],
     ["lit_nash fit: algo=mpo has no key 'etaa' (from 'algo.etaa=2'); did you mean algo.eta=2?",
      "algo=mpo's keys: _target_, eta, k,"]),
    ("key_of_another_option", ["fit", "policy.temperature=0"],
     ["policy=tabular has no key 'temperature'", "It is a key of policy=causal_lm"]),
    ("text_without_paths", ["fit", "task=text"],
     ["lit_nash fit: task=text needs data.path (the prompt file), policy.model_path (the policy's model folder) and "
      "preference.path (the preference model's folder), which have no value"]),
]
ONE_LINE = {"vllm_not_installed", "dashed_override", "group_key_at_the_top", "key_typo",
            "key_of_another_option", "text_without_paths"} | {c[0] for c in CASES if c[0].endswith("_mistyped")}


@pytest.mark.parametrize("case,messages", [pytest.param(i, m, id=i) for i, _, m in CASES])
def test_a_refusal_is_one_line_that_names_the_fix(shared, case, messages):
    root, paths, _, results = shared
    out = results[case]
    check_refused(out, messages, {**paths, "root": str(root)})
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    if case in ONE_LINE:  # refused before anything was built: the line alone
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr[-3000:]


def test_no_refusal_touched_the_earlier_run(shared):
    root, _, before, _ = shared
    assert checkpoints(root) == before["checkpoints"]
    assert mlflow_snapshot(root) == before["mlflow"], "a refused command created, changed or closed an MLflow run"
    assert not list(root.glob("multirun")), "no refused command left a run folder"


def test_the_preference_context_fix_named_works(shared, tmp_path):
    """preference.max_length, as the line says, keeps each comparison's last tokens: the run trains."""
    _, paths, _, _ = shared
    args = text("data.path={long}", "preference.path={short_pairwise}", "policy.max_prompt_tokens=40",
                "preference.max_length=64")
    out = run_cli(*[a.format(**paths) for a in args], cwd=tmp_path, env=ENV)
    assert out.returncode == 0, out.stderr[-3000:]


def test_one_sided_labels_without_swap_augment_warn(shared, tmp_path):
    """Every pair's label says "a wins" and pairs are not swapped: the run trains (exit 0) and says, once,
    that the position is all it can learn."""
    _, paths, _, _ = shared
    out = run_cli("train_preference", f"model_path={paths['pairwise']}", f"data.path={paths['first_wins']}",
                  "data.eval_fraction=0", "train.swap_augment=false", "trainer.max_epochs=1", *QUIET,
                  cwd=tmp_path, env=ENV)
    assert out.returncode == 0, out.stderr[-3000:]
    warning = [line for line in out.stderr.splitlines() if "warning" in line]
    assert warning == [
        f"lit_nash train_preference: warning: every decided label of data.path '{paths['first_wins']}' prefers the first "
        "response (a, label > 0.5, in all 6 of 6 training pairs) and train.swap_augment=false: the only thing the "
        "classifier can learn is \"the first response wins\", not which response is better. Set train.swap_augment=true "
        "(each pair is also shown swapped), or give pairs with the preferred response in both places"]
    swapped = run_cli("train_preference", f"model_path={paths['pairwise']}", f"data.path={paths['first_wins']}",
                      "data.eval_fraction=0", "trainer.max_epochs=1", *QUIET, cwd=tmp_path, env=ENV)
    assert swapped.returncode == 0 and "warning" not in swapped.stderr, swapped.stderr[-3000:]


def test_a_folder_nobody_can_write_gets_one_line(tmp_path):
    """A read-only working folder: one line naming the folder and the fix, not Hydra's chained tracebacks. As
    root, chmod does not stop a write, so the CLI runs without the capabilities that let root write anywhere."""
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    prefix = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root, where chmod does not stop writes, and setpriv is not there")
        caps = "-dac_override,-dac_read_search"
        prefix = ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}"]
    try:
        for multirun in ([], ["-m"]):
            out = subprocess.run([*prefix, sys.executable, "-m", "lit_nash", "fit", *multirun, "trainer.max_steps=1"],
                                 cwd=locked, capture_output=True, text=True, timeout=300, env={**os.environ, **ENV})
            key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
            assert out.returncode == 2, out.stderr[-3000:]
            assert out.stderr.strip() == (
                f"lit_nash fit: cannot create the run folder '{locked}/{'multirun' if multirun else 'outputs'}': "
                f"'{locked}' is not writable (its permissions). Run from a writable folder (cd <folder>), or name one "
                f"with {key}=<writable folder> (and the MLflow store with "
                "logger.tracking_uri=sqlite:///<writable folder>/mlruns.db)")
    finally:
        locked.chmod(0o755)
    assert list(locked.iterdir()) == []
