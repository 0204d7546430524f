"""Broken files and a broken environment fail through the real CLI with one line that names the file or the key
and the fix, and never damage what an earlier good run left behind (as ``tests/test_bad_inputs.py`` checks
for bad values): a prompt file that is not UTF-8 or cannot be read, corrupt model weights, prompts or responses
longer than the model's context, a huge ``algo.k``, a full disk during a checkpoint write, a tracking store that
is not an MLflow store or not a ``sqlite:///`` URI, a resume whose store was deleted, and ``eval`` or ``resume``
of a checkpoint that is not lit_nash's or holds code.

One good short ``fit`` runs first in a shared folder; the start-up failures then run there (the same
``mlruns.db``), and a test checks that every checkpoint, the other application's database and the MLflow store
are unchanged. The cases that need a run of their own (a full disk, a deleted store) get their own folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import torch

from .cli import REPO, check_refused, run_cli, run_many
from .test_bad_inputs import CLASSIFIER_WORDS, WORDS, checkpoints, mlflow_snapshot, sha256

ENV = {"PYTHONPATH": str(REPO), "HYDRA_FULL_ERROR": "0"}
QUIET = ["trainer.enable_progress_bar=false"]


class Evil:
    """Pickles as a call of ``os.system``: a checkpoint that holds code."""

    def __reduce__(self):
        return (os.system, ("echo this checkpoint ran code > PWNED",))


def truncate(path: Path, size: int) -> None:
    path.write_bytes(path.read_bytes()[:size])


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The shared folder: a good run's checkpoint and MLflow run, the broken files the cases point at, and the
    fingerprints taken before any case ran; then every start-up case, two at a time."""
    from lit_nash.models import tiny_causal_lm, tiny_sequence_classifier

    root = tmp_path_factory.mktemp("environment").resolve()
    good = run_cli("fit", "game=weighted_rps", "trainer.max_steps=4", *QUIET, cwd=root, env=ENV)
    assert good.returncode == 0, good.stderr[-3000:]
    (good_ckpt,) = root.glob("outputs/*/*/checkpoints/last.ckpt")

    m, d = root / "models", root / "data"
    paths = {"root": root, "good_ckpt": good_ckpt,
             "policy": tiny_causal_lm(m / "policy", WORDS, seed=1),  # 64 positions
             "pairwise": tiny_sequence_classifier(m / "pairwise", CLASSIFIER_WORDS, seed=2)}
    for name in ("policy", "pairwise"):  # the same models with a cut weights file
        paths[f"bad_{name}"] = shutil.copytree(paths[name], m / f"bad_{name}")
        truncate(paths[f"bad_{name}"] / "model.safetensors", 300)
    d.mkdir()
    (d / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ["say hello", "name a colour"]))
    (d / "latin1.jsonl").write_bytes(b'{"prompt": "say hello"}\n{"prompt": "caf\xe9 red"}\n')  # é in Latin-1
    (d / "long.jsonl").write_text(json.dumps({"prompt": "say hello"}) + "\n" + json.dumps({"prompt": " ".join(["red"] * 100)}) + "\n")
    paths.update(prompts=d / "prompts.jsonl", latin1=d / "latin1.jsonl", long=d / "long.jsonl")

    s = root / "stores"
    s.mkdir()
    (s / "junk.db").write_text("not a database\n")
    with sqlite3.connect(s / "foreign.db") as con:  # another application's database
        con.execute("CREATE TABLE notes (id INTEGER, body TEXT)")
        con.execute("INSERT INTO notes VALUES (1, 'keep me')")
    con.close()
    (s / "folder").mkdir()
    paths.update(junk_db=s / "junk.db", foreign_db=s / "foreign.db", store_dir=s / "folder")

    c = root / "foreign_checkpoints"
    c.mkdir()
    torch.save({"state_dict": {}, "lit_nash_config": {}, "x": Evil()}, c / "code.ckpt")
    torch.save({"state_dict": {"w": torch.zeros(2)}, "epoch": 0}, c / "other.ckpt")  # another program's
    shutil.copy(good_ckpt, c / "truncated.ckpt")
    truncate(c / "truncated.ckpt", 2000)
    paths.update(code_ckpt=c / "code.ckpt", other_ckpt=c / "other.ckpt", truncated_ckpt=c / "truncated.ckpt")

    files = [s / "junk.db", s / "foreign.db", *(paths[f"bad_{n}"] / "model.safetensors" for n in ("policy", "pairwise"))]
    before = {"checkpoints": checkpoints(root), "mlflow": mlflow_snapshot(root), "files": {str(f): sha256(f) for f in files}}
    assert len(before["mlflow"]) == 1
    paths = {k: str(v) for k, v in paths.items()}
    done = run_many(*[([a.format(**paths) for a in args], {"cwd": root, "env": ENV}) for _, args, _ in CASES])
    return root, paths, before, {case[0]: out for case, out in zip(CASES, done)}


def text(*overrides: str) -> list[str]:
    """A text run on the shared prompt file, tiny policy (64 positions) and pairwise classifier."""
    return ["fit", "task=text", "data.path={prompts}", "policy.model_path={policy}", "preference.path={pairwise}",
            "policy.max_new_tokens=6", "trainer.max_steps=1", *QUIET, *overrides]


CHECKPOINT_FIX = "give a checkpoint written by `python -m lit_nash fit`"
# (id, command line, substrings of stderr: what, where and the fix)
CASES = [
    # prompt files
    ("prompts_not_utf8", text("data.path={latin1}"),
     ["lit_nash fit: data.path='{latin1}': line 2 is not UTF-8 (byte 0xe9 at column 16", "save the file as UTF-8"]),
    # model weights
    ("policy_weights_corrupt", text("policy.model_path={bad_policy}"),
     ["policy.model_path '{bad_policy}': the weights file '{bad_policy}/model.safetensors' is corrupt or truncated",
      "save the model there again with save_pretrained"]),
    ("preference_weights_corrupt", text("preference.path={bad_pairwise}"),
     ["PairwiseClassifier: preference.path '{bad_pairwise}': the weights file '{bad_pairwise}/model.safetensors' "
      "is corrupt or truncated"]),
    # the model's context
    ("prompt_beyond_context", text("data.path={long}"),
     ["prompt 1 ('red red red", "has 101 tokens, and with policy.max_new_tokens=6 its sequence needs 107 positions",
      "has 64 positions", "policy.max_prompt_tokens=58"]),
    ("truncated_prompt_beyond_context", text("data.path={long}", "policy.max_prompt_tokens=60"),
     ["has 60 tokens (policy.max_prompt_tokens=60)", "policy.max_prompt_tokens=58", "lower policy.max_new_tokens to 4"]),
    ("max_new_tokens_beyond_positions", text("policy.max_new_tokens=64"),
     ["policy.max_new_tokens=64 does not fit", "has 64 positions", "at most 63"]),
    # algo.k
    ("k_huge", ["fit", "rollout=sampled", "algo.k=10000000000"],
     ["algo=mpo: k must be at most 65536", "got 10000000000"]),
    ("k_huge_all_pairs", ["fit", "rollout=sampled", "algo=comal", "algo.k=5000"],
     ["algo=comal: k must be at most 4096", "all pairs labeled", "got 5000"]),
    # the tracking store
    ("store_not_sqlite", ["fit", "logger.tracking_uri=sqlite:///{junk_db}"],
     ["lit_nash fit: logger.tracking_uri='sqlite:///{junk_db}': '{junk_db}' is not an SQLite database",
      "move it away (mv '{junk_db}' '{junk_db}.bak')"]),
    ("store_of_another_application", ["fit", "logger.tracking_uri=sqlite:///{foreign_db}"],
     ["'{foreign_db}' is an SQLite database of another application (tables notes), not an MLflow store",
      "logger.tracking_uri=sqlite:///<path>/mlruns.db"]),
    ("store_path_without_scheme", ["fit", "logger.tracking_uri=mlruns.db"],
     ["lit_nash fit: logger.tracking_uri='mlruns.db' is a path, not a tracking URI",
      "write logger.tracking_uri=sqlite:///{root}/mlruns.db"]),
    ("store_folder_without_scheme", ["fit", "logger.tracking_uri={store_dir}"],
     ["is a path, not a tracking URI", "write logger.tracking_uri=sqlite:///{store_dir}/mlruns.db"]),
    ("store_sqlite_folder", ["fit", "logger.tracking_uri=sqlite:///{store_dir}"],
     ["names a folder", "logger.tracking_uri=sqlite:///{store_dir}/mlruns.db"]),
    ("store_two_slashes", ["fit", "logger.tracking_uri=sqlite://mlruns.db"],
     ["a sqlite URI has three slashes", "logger.tracking_uri=sqlite:///mlruns.db"]),
    ("eval_store_of_another_application", ["eval", "policies=[{good_ckpt}]", "tracking_uri=sqlite:///{foreign_db}"],
     ["lit_nash eval: tracking_uri='sqlite:///{foreign_db}'", "another application"]),
    ("compare_store_not_sqlite", ["compare", "tracking_uri=sqlite:///{junk_db}"],
     ["lit_nash compare: tracking_uri='sqlite:///{junk_db}'", "is not an SQLite database"]),
    # checkpoints that are not lit_nash's
    ("eval_checkpoint_with_code", ["eval", "policies=[{code_ckpt}]"],
     ["lit_nash eval: refusing '{code_ckpt}': it holds code (the global posix.system), which lit_nash never loads",
      CHECKPOINT_FIX]),
    ("eval_checkpoint_of_another_program", ["eval", "policies=[{other_ckpt}]"],
     ["'{other_ckpt}' holds no run config", "not a lit_nash checkpoint"]),
    ("eval_checkpoint_truncated", ["eval", "policies=[{truncated_ckpt}]"],
     ["'{truncated_ckpt}' is not a readable checkpoint (truncated", CHECKPOINT_FIX]),
    ("resume_checkpoint_with_code", ["fit", "resume={code_ckpt}"],
     ["refusing '{code_ckpt}': it holds code (the global posix.system)"]),
]
# refused before anything is built, by lit_nash itself: the line alone
ONE_LINE = {"prompts_not_utf8"} | {c[0] for c in CASES if c[0].startswith(("store", "eval", "compare", "resume"))}


@pytest.mark.parametrize("case,messages", [pytest.param(i, m, id=i) for i, _, m in CASES])
def test_a_broken_file_or_store_fails_with_one_clear_line(world, case, messages):
    root, paths, _, results = world
    out = results[case]
    check_refused(out, messages, paths)
    assert "weights_only" not in out.stderr  # torch's advice to load with weights_only=False is never passed on
    if case in ONE_LINE:
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr[-3000:]
    if case.startswith("k_"):  # Hydra's report of a config value refused while it builds: no traceback
        assert "Traceback" not in out.stderr, out.stderr[-3000:]


def test_no_case_damaged_a_checkpoint_a_file_or_the_mlflow_store(world):
    root, paths, before, _ = world
    assert checkpoints(root) == before["checkpoints"]
    assert {f: sha256(Path(f)) for f in before["files"]} == before["files"]
    assert mlflow_snapshot(root) == before["mlflow"], "a case created, changed or closed an MLflow run"
    assert not (root / "PWNED").exists()  # the checkpoint's code never ran


def test_the_named_fix_truncates_long_prompts(world, tmp_path):
    """policy.max_prompt_tokens, as the message says, keeps the prompts' last tokens: the run trains."""
    _, paths, _, _ = world
    args = [a.format(**paths) for a in text("data.path={long}", "policy.max_prompt_tokens=58")]
    out = run_cli(*args, cwd=tmp_path, env=ENV)
    assert out.returncode == 0, out.stderr[-3000:]


def test_an_unreadable_prompt_file_names_the_file_and_the_fix(world, tmp_path):
    """chmod 000 blocks reads for a normal user; root reads anyway, so as root the CLI runs without the
    capabilities that override file permissions (setpriv), as a normal user would."""
    _, paths, _, _ = world
    locked = tmp_path / "locked.jsonl"
    shutil.copy(paths["prompts"], locked)
    locked.chmod(0)
    prefix = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root, where chmod 000 does not block reads, and setpriv is not there to drop "
                        "the capabilities that let root read")
        caps = "-dac_override,-dac_read_search"
        prefix = ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}"]
    args = [a.format(**paths) for a in text(f"data.path={locked}")]
    out = subprocess.run([*prefix, sys.executable, "-m", "lit_nash", *args], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300, env={**os.environ, **ENV})
    assert out.returncode != 0
    assert (f"lit_nash fit: data.path='{locked}': permission denied, the file cannot be read; fix its permissions "
            f"(chmod u+r '{locked}')") in out.stderr, out.stderr[-3000:]
    assert "Traceback" not in out.stderr


def runs(cwd):
    client = mlflow.MlflowClient(f"sqlite:///{cwd}/mlruns.db")
    return client, client.search_runs([client.get_experiment_by_name("lit_nash").experiment_id])


def test_a_full_disk_during_a_checkpoint_write_keeps_the_previous_one_and_says_so(tmp_path):
    out = run_cli("fit", "game=weighted_rps", "trainer.max_steps=6", "checkpoint.every_n_steps=2", *QUIET,
                  "+callbacks.fault._target_=tests.faults.DiskFullAt", "+callbacks.fault.step=4", cwd=tmp_path, env=ENV)
    assert out.returncode == 1, out.stderr[-3000:]
    (path,) = tmp_path.glob("outputs/*/*/checkpoints/last.ckpt")
    assert out.stderr.strip() == (
        f"lit_nash fit: could not write the checkpoint '{path}' (No space left on device); the previous one there is "
        f"intact (step 2). The run stopped: free space on that disk (df -h '{path.parent}'), then continue with "
        f"resume={path}")
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # the half-written temporary file is gone
    assert torch.load(path, weights_only=True)["global_step"] == 2
    client, (run,) = runs(tmp_path)
    assert run.info.status == "FAILED"
    resumed = run_cli("fit", f"resume={path}", *QUIET, cwd=tmp_path, env=ENV)  # the fix the line names
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert torch.load(path, weights_only=True)["global_step"] == 6


def test_a_resume_whose_store_was_deleted_continues_into_a_new_mlflow_run(tmp_path):
    first = run_cli("fit", "game=weighted_rps", "trainer.max_steps=2", *QUIET, cwd=tmp_path, env=ENV)
    assert first.returncode == 0, first.stderr[-3000:]
    (path,) = tmp_path.glob("outputs/*/*/checkpoints/last.ckpt")
    old = torch.load(path, weights_only=True)["lit_nash_run"]["run_id"]  # (an MlflowClient here would keep the file open)
    for f in tmp_path.glob("mlruns.db*"):
        f.unlink()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()

    out = run_cli("fit", f"resume={path}", "trainer.max_steps=4", *QUIET, cwd=tmp_path, env=ENV)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (f"lit_nash fit: MLflow run {old} is not in sqlite:///{tmp_path}/mlruns.db (the store was "
            "deleted or replaced); the checkpoint is intact: the run continues, logging into a new MLflow run") in out.stderr
    assert hashlib.sha256(path.read_bytes()).hexdigest() != digest  # trained on: step 4 replaced step 2
    saved = torch.load(path, weights_only=True)
    assert saved["global_step"] == 4
    client, (new,) = runs(tmp_path)
    assert new.info.run_id != old and new.info.status == "FINISHED"
    assert saved["lit_nash_run"]["run_id"] == new.info.run_id  # the checkpoint now names the new run
    assert new.data.tags["checkpoint"] == str(path) and new.data.params["algo._target_"] == "lit_nash.algorithms.mpo.MPO"
    assert client.get_metric_history(new.info.run_id, "game/duality_gap")
