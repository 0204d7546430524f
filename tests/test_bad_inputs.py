"""Bad inputs fail at start-up, through the real CLI, with a message naming the key, the value and the fix,
and never touch what an earlier good run left behind: its checkpoints and its MLflow run.

One good short ``fit`` runs first in a shared folder; every bad input then runs in that same folder (the
same ``mlruns.db``), and the last test checks that every checkpoint is byte-identical, that the MLflow
store holds the same runs with the same status, params and metric histories, and no new run.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from .cli import check_refused, run_cli, run_many

WORDS = "say hello name a colour red blue green cat dog".split()
CLASSIFIER_WORDS = WORDS + ["[", "SEP", "]"]  # the pairwise classifier's default template holds [SEP]
ENV = {"HYDRA_FULL_ERROR": "0"}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def checkpoints(root: Path) -> dict[str, str]:
    """sha256 of every checkpoint file anywhere under root (the run's own folder included)."""
    return {str(p.relative_to(root)): sha256(p) for p in sorted(root.rglob("*.ckpt")) if p.is_file()}


def mlflow_snapshot(root: Path) -> dict[str, dict]:
    """Every run of every experiment: status, params, and each metric's full history."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{root}/mlruns.db")
    runs = {}
    for exp in client.search_experiments():
        for run in client.search_runs([exp.experiment_id], max_results=1000):
            runs[run.info.run_id] = {
                "experiment": exp.name,
                "status": run.info.status,
                "end_time": run.info.end_time,
                "params": dict(run.data.params),
                "metrics": {key: sorted((m.step, m.timestamp, m.value) for m in client.get_metric_history(run.info.run_id, key))
                            for key in run.data.metrics},
            }
    return runs


def no_pad_tokenizer(words):
    """A word-level tokenizer like lit_nash.models.build_tokenizer's, but with no pad token."""
    from transformers import PreTrainedTokenizerFast

    from lit_nash.models import SPECIAL_TOKENS, build_tokenizer

    backend = build_tokenizer(words).backend_tokenizer
    specials = {k: v for k, v in SPECIAL_TOKENS.items() if k != "pad_token"}
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, **specials)
    assert tok.pad_token_id is None
    return tok


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """The shared folder: one good run's checkpoint and MLflow run, the models and prompt files the bad
    inputs point at, and the fingerprints taken before any bad input ran."""
    from lit_nash.models import build_tokenizer, tiny_causal_lm, tiny_sequence_classifier

    root = tmp_path_factory.mktemp("bad_inputs")
    good = run_cli("fit", "game=weighted_rps", "algo=mpo", "trainer.max_steps=4", "trainer.enable_progress_bar=false",
                   "+callbacks.ckpt._target_=lightning.pytorch.callbacks.ModelCheckpoint",
                   f"+callbacks.ckpt.dirpath={root}/ckpts", "+callbacks.ckpt.save_last=true", cwd=root)
    assert good.returncode == 0, good.stderr[-3000:]

    m = root / "models"
    paths = {
        "policy": tiny_causal_lm(m / "policy", WORDS, seed=1),
        "pairwise": tiny_sequence_classifier(m / "pairwise", CLASSIFIER_WORDS, seed=2),
        "no_pad_policy": tiny_causal_lm(m / "no_pad_policy", WORDS, seed=3),
        "big_tokenizer": m / "big_tokenizer",
        "no_pad_tokenizer": m / "no_pad_tokenizer",
        "empty_dir": m / "empty_dir",
    }
    no_pad_tokenizer(WORDS).save_pretrained(paths["no_pad_policy"])
    no_pad_tokenizer(CLASSIFIER_WORDS).save_pretrained(paths["no_pad_tokenizer"])
    build_tokenizer(CLASSIFIER_WORDS + [f"w{i}" for i in range(20)]).save_pretrained(paths["big_tokenizer"])
    paths["empty_dir"].mkdir()
    (paths["good_checkpoints"],) = root.glob("outputs/*/*/checkpoints")  # the good run's own last.ckpt is there

    d = root / "data"
    d.mkdir()
    prompts = ["say hello", "name a colour", "say cat", "say dog"]
    files = {
        "prompts": "".join(json.dumps({"prompt": p}) + "\n" for p in prompts),
        "empty": "",
        "malformed": json.dumps({"prompt": "say hello"}) + "\n{prompt: not json\n",
        "no_field": json.dumps({"prompt": "say hello"}) + "\n" + json.dumps({"text": "say dog"}) + "\n",
    }
    for name, text in files.items():
        (d / f"{name}.jsonl").write_text(text)
        paths[name] = d / f"{name}.jsonl"

    before = {"checkpoints": checkpoints(root), "mlflow": mlflow_snapshot(root)}
    assert before["checkpoints"], "the good run wrote no checkpoint"
    assert len(before["mlflow"]) == 1 and next(iter(before["mlflow"].values()))["status"] == "FINISHED"
    paths = {k: str(v) for k, v in paths.items()}
    # every bad input runs here, two at a time (each is a start-up: imports dominate), before any test reads them
    done = run_many(*[([a.format(**paths) for a in args], {"cwd": root, "env": ENV}) for _, args, _ in CASES])
    return root, paths, before, {case[0]: out for case, out in zip(CASES, done)}


def text(*overrides: str) -> list[str]:
    """A text run on the shared prompt file, tiny policy and pairwise classifier, with overrides after."""
    return ["fit", "task=text", "data.path={prompts}", "policy.model_path={policy}",
            "preference.path={pairwise}", "trainer.max_steps=1", *overrides]


def token(*overrides: str) -> list[str]:
    """A causal LM on the token game (its tiny LM is built in the run folder)."""
    return ["fit", "task=token_game", "trainer.max_steps=1", *overrides]


# (id, command line, substrings of stderr: the key, the bad value and the fix where there is one)
CASES = [
    # unknown keys, groups and choices (Hydra, before torch is imported)
    ("unknown_key", ["fit", "algo.etaa=1"], ["algo=mpo has no key 'etaa' (from 'algo.etaa=1'); did you mean algo.eta=1?"]),
    ("key_of_another_policy", ["fit", "policy.temperature=0"],
     ["policy=tabular has no key 'temperature'", "It is a key of policy=causal_lm"]),
    ("unknown_policy", ["fit", "policy=mlp"], ["Could not find 'policy/mlp'", "causal_lm"]),
    ("unknown_trainer", ["fit", "trainer=tpu"], ["Could not find 'trainer/tpu'", "fsdp"]),
    ("unknown_group", ["fit", "optimizer=adam"],
     ["fit has no key 'optimizer' (from 'optimizer=adam'); did you mean policy.optimizer.<key>=... (policy.optimizer's "
      "keys: _target_, _partial_, lr"]),
    ("unknown_top_level_key", ["fit", "+algos=egpo"],  # Hydra's own suggestion for the typo algos=egpo
     ["unknown top-level key 'algos' (from '+algos=egpo')", "algo, callbacks, checkpoint", "did you mean algo=egpo?"]),
    # the run's length, logging and seed (before torch is imported)
    ("max_steps_forever", ["fit", "trainer.max_steps=-1"],
     ["trainer.max_steps must be an integer >= 1 (optimizer steps; -1 would train forever), got -1"]),
    ("max_steps_fraction", ["fit", "trainer.max_steps=1.5"], ["trainer.max_steps must be an integer >= 1", "got 1.5"]),
    ("max_steps_list", ["fit", "trainer.max_steps=[1,2]"], ["trainer.max_steps must be an integer >= 1", "got [1, 2]"]),
    ("log_every_zero", ["fit", "trainer.log_every_n_steps=0"],
     ["trainer.log_every_n_steps must be an integer >= 1 (steps between logged metrics), got 0"]),
    ("negative_seed", ["fit", "seed=-1"], ["seed must be an integer in [0, 4294967295] (numpy's range), got -1"]),
    ("bench_max_steps", ["bench", "trainer.max_steps=-1"], ["lit_nash bench: trainer.max_steps must be an integer >= 1"]),
    # algorithms
    ("mpo_eta", ["fit", "algo.eta=-1"], ["algo=mpo: eta must be > 0, got -1"]),
    ("mpo_eta_list", ["fit", "algo.eta=[1,2]"], ["algo=mpo: eta must be a number > 0, got [1, 2]"]),
    ("egpo_tau", ["fit", "algo=egpo", "algo.tau=0"], ["algo=egpo: tau must be > 0, got 0"]),
    ("mpo_magnet_every", ["fit", "algo.magnet_every=0.5"], ["algo=mpo: magnet_every must be an integer >= 1", "0.5"]),
    ("comal_reset_every", ["fit", "algo=comal", "algo.reset_every=-3"],
     ["algo=comal: reset_every must be an integer >= 1 (or null for never), got -3"]),
    ("mnpo_history_sum", ["fit", "algo=mnpo", "algo.history_weights=[0.2,0.2]"],
     ["algo=mnpo: history_weights must be non-negative and sum to 1, got [0.2, 0.2]"]),
    ("sppo_k", ["fit", "algo=sppo", "algo.k=1"], ["algo=sppo: k must be an integer >= 2", "got 1"]),
    ("mpo_k", ["fit", "algo.k=0"], ["algo=mpo: k must be an integer >= 1", "got 0"]),
    ("online_ipo_temperature", ["fit", "algo=online_ipo", "algo.proposal_temperature=-1"],
     ["algo=online_ipo: proposal_temperature must be > 0, got -1"]),
    ("online_ipo_top_k", ["fit", "algo=online_ipo", "algo.proposal_top_k=-1"],
     ["algo=online_ipo: proposal_top_k must be an integer >= 0 (0 = off), got -1"]),
    ("nash_md_mixture", ["fit", "algo=nash_md", "algo.mixture_coef=1.5"],
     ["algo=nash_md: mixture_coef must lie in [0, 1]", "got 1.5"]),
    ("nash_mp_inner_steps", ["fit", "algo=nash_mp", "algo.inner_steps=0"],
     ["algo=nash_mp: inner_steps must be an integer >= 1", "got 0"]),
    # policies, rollout, eval
    ("tabular_reference", ["fit", "policy.reference=normal"],
     ["policy.reference must be one of ['uniform', 'gaussian'], got 'normal'"]),
    ("lm_temperature", token("policy.temperature=0"), ["policy.temperature must be > 0, got 0"]),
    ("lm_top_p", token("policy.top_p=1.5"), ["policy.top_p must lie in (0, 1]", "got 1.5"]),
    ("prompts_per_step", ["fit", "rollout=sampled", "rollout.prompts_per_step=0"],
     ["rollout.prompts_per_step must be an integer >= 1", "got 0"]),
    ("eval_every", ["fit", "eval.every_n_steps=-1"], ["eval: need every_n_steps >= 1", "every_n_steps=-1"]),
    # games
    ("matrix_not_antisymmetric", ["fit", "game=matrix", "game.P=[[0.5,0.9],[0.7,0.5]]"], ["P + Pᵀ = 1"]),
    ("matrix_range", ["fit", "game=matrix", "game.P=[[0.5,1.5],[-0.5,0.5]]"],
     ["entries must lie in [0, 1], got 1.5 at [0, 1]"]),
    ("rps_weights", ["fit", "game=weighted_rps", "game.weights=[1,2,1]"], ["weighted_rps weights must lie in [0, 1], got 2 at [1]"]),
    ("no_game", ["fit", "~game"], ["a run takes its prompts from a game (game=<name> with data=game) or from a dataset"]),
    # files: models, datasets, tokenizers
    ("policy_model_missing", text("policy.model_path={empty_dir}/../nowhere"),
     ["policy.model_path=", "nowhere' does not exist", "save_pretrained"]),
    ("policy_model_empty_dir", text("policy.model_path={empty_dir}"), ["policy.model_path=", "holds no config.json"]),
    ("judge_missing", ["fit", "preference=judge", "preference.path=/nowhere"],
     ["lit_nash fit: preference.path='/nowhere' does not exist"]),
    ("pairwise_missing", text("preference.path={empty_dir}/../nowhere"),
     ["lit_nash fit: preference.path=", "nowhere' does not exist"]),
    ("dataset_missing", text("data.path=/nowhere/prompts.jsonl"), ["data.path='/nowhere/prompts.jsonl': no such file"]),
    ("dataset_empty", text("data.path={empty}"), ["data.path=", "empty.jsonl': the file is empty"]),
    ("dataset_malformed", text("data.path={malformed}"), ["data.path=", "malformed.jsonl': could not load it"]),
    ("dataset_row_without_prompt", text("data.path={no_field}"), ["row 1 has no 'prompt' field", "data.column"]),
    ("policy_no_pad", text("policy.model_path={no_pad_policy}"),
     ["has no pad token; set policy.pad_token=<token>", "policy.pad_token='[EOS]'"]),
    ("preference_no_pad", text("preference.tokenizer_path={no_pad_tokenizer}"),
     ["has no pad token; set preference.pad_token=<token>", "preference.pad_token='[EOS]'"]),
    ("preference_vocab_too_big", text("preference.tokenizer_path={big_tokenizer}"),
     ["preference.tokenizer_path", "has 37 tokens but the model", "has 17 embedding rows"]),
    # checkpoints and resume (the shared folder's good run is there to be resumed)
    ("checkpoint_period", ["fit", "checkpoint.every_n_steps=-1"],
     ["checkpoint.every_n_steps must be an integer >= 0 (0 = only at the end), got -1"]),
    ("resume_nothing", ["fit", "resume=/nowhere/last.ckpt"],
     ["resume='/nowhere/last.ckpt' is neither a checkpoint file, a run folder, an MLflow run id"]),
    ("resume_unknown_run", ["fit", "resume=0123456789abcdef0123456789abcdef"], ["no such MLflow run"]),
    ("resume_changes_the_run", ["fit", "resume=last", "algo.eta=2"],
     ["resume: this command sets 'algo.eta=2' but the run was trained with algo.eta=1.0"]),
    ("checkpoint_of_another_run", ["fit", "checkpoint.dir={good_checkpoints}"],
     ["checkpoint.dir='{good_checkpoints}' already holds '{good_checkpoints}/last.ckpt', the checkpoint of another run",
      "resume={good_checkpoints}/last.ckpt"]),
    # the environment: a tracking server nobody runs (port 9 of the loopback: nothing listens there)
    ("tracking_server_down", ["fit", "logger.tracking_uri=http://127.0.0.1:9"],
     ["lit_nash fit: no MLflow tracking server answers at logger.tracking_uri=http://127.0.0.1:9 (Connection refused)",
      "start it (mlflow server --host 127.0.0.1 --port 9)", "logger.tracking_uri=sqlite:///mlruns.db"]),
    ("eval_tracking_server_down", ["eval", "policies=[0123456789abcdef0123456789abcdef]", "tracking_uri=http://127.0.0.1:9"],
     ["lit_nash eval: no MLflow tracking server answers at tracking_uri=http://127.0.0.1:9"]),
    # the other commands
    ("eval_missing_checkpoint", ["eval", "policies=[/nowhere/last.ckpt]"],
     ["checkpoint '/nowhere/last.ckpt' does not exist"]),
    ("compare_unknown_experiment", ["compare", "experiment=nope"], ["no experiment 'nope'"]),
]


@pytest.mark.parametrize("case,messages", [pytest.param(i, m, id=i) for i, _, m in CASES])
def test_bad_input_fails_at_start_up_with_a_clear_message(shared, case, messages):
    root, paths, _, results = shared
    check_refused(results[case], messages, paths)


def test_no_bad_input_damaged_a_checkpoint_or_the_mlflow_store(shared):
    root, _, before, _ = shared
    assert checkpoints(root) == before["checkpoints"]
    assert mlflow_snapshot(root) == before["mlflow"], "a bad input created, changed or closed an MLflow run"


def test_a_pad_token_set_for_a_tokenizer_without_one_is_used(shared):
    """The fix the message names works: policy.pad_token=<its EOS token> builds the policy."""
    from lit_nash.policy.causal_lm import CausalLMPolicy

    _, paths, _, _ = shared
    policy = CausalLMPolicy(paths["no_pad_policy"], prompts=["say hello"], pad_token="[EOS]")
    assert policy.pad_id == policy.eos_id == policy.tokenizer.pad_token_id
