"""``lit_nash.tracking`` against a real sqlite MLflow store in a temporary folder: runs are made with
``MlflowClient`` exactly as ``fit`` and ``eval`` leave them (tags, statuses, start times), then read back."""

import json

import pytest
from mlflow import MlflowClient

from lit_nash import tracking

T0 = 1_700_000_000_000  # start times in ms, set explicitly so that the order never rests on the clock


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One store for the module (creating a sqlite store runs MLflow's migrations); each test uses its own
    experiments. Artifacts go to the folder's artifacts/."""
    root = tmp_path_factory.mktemp("tracking")
    uri = f"sqlite:///{root}/mlruns.db"
    return root, uri, MlflowClient(uri)


def make_run(client, experiment_id, start, status="FINISHED", **tags):
    run = client.create_run(experiment_id, start_time=T0 + start, tags=tags)
    if status != "RUNNING":
        client.set_terminated(run.info.run_id, status=status)
    return run.info.run_id


def experiment(client, root, name):
    return client.create_experiment(name, artifact_location=str(root / "artifacts" / name))


def test_flat_params_flattens_nested_keys_and_stringifies_lists():
    config = {"algo": {"eta": 1, "name": "egpo", "inner": {"tau": 0.1}}, "seed": 0, "tags": [1, 2], "path": None}
    assert tracking.flat_params(config) == {"algo.eta": 1, "algo.name": "egpo", "algo.inner.tau": 0.1, "seed": 0,
                                            "tags": "[1, 2]", "path": None}


def test_client_refuses_a_missing_sqlite_file_and_creates_none(tmp_path):
    db = tmp_path / "absent" / "mlruns.db"
    uri = f"sqlite:///{db}"
    with pytest.raises(SystemExit) as exit_:
        tracking.client(uri, missing="no store at {uri} (no file {db})")
    assert str(exit_.value) == f"no store at {uri} (no file {db})"
    assert not db.exists()

    db = tmp_path / "mlruns.db"  # without `missing`, MLflow creates the store
    client = tracking.client(f"sqlite:///{db}")
    assert isinstance(client, MlflowClient) and tracking.experiment_names(client) == ["Default"]
    assert db.is_file()
    tracking.client(f"sqlite:///{db}", missing="never: {db}")  # an existing file is a store


def test_finished_runs_are_the_matching_finished_ones_oldest_first(store):
    root, uri, client = store
    eid = experiment(client, root, "finished")
    late = make_run(client, eid, 30, algo="egpo")
    early = make_run(client, eid, 10, algo="mpo")
    middle = make_run(client, eid, 20, algo="egpo")
    make_run(client, eid, 40, status="RUNNING", algo="egpo")
    make_run(client, eid, 5, status="FAILED", algo="egpo")
    make_run(client, eid, 6, status="KILLED", algo="mpo")

    assert [r.info.run_id for r in tracking.finished_runs(client, "finished", None, "eval")] == [early, middle, late]
    egpo = tracking.finished_runs(client, "finished", "tags.algo = 'egpo'", "eval")
    assert [r.info.run_id for r in egpo] == [middle, late]
    assert tracking.finished_runs(client, "finished", "tags.algo = 'nope'", "eval") == []


def test_finished_runs_of_an_unknown_experiment_names_the_existing_ones(store):
    root, uri, client = store
    experiment(client, root, "named")
    with pytest.raises(SystemExit) as exit_:
        tracking.finished_runs(client, "nope", None, "compare")
    message = str(exit_.value)
    assert message.startswith(f"lit_nash compare: no experiment 'nope' in {uri}; the experiments there are [")
    assert "'named'" in message and "'Default'" in message
    assert tracking.experiment_names(client) == sorted(tracking.experiment_names(client))


def test_a_table_logged_newest_first_keeps_the_older_rows_after_the_new(store):
    """MLflow's log_table appends a new evaluation's rows at the end; the completions table puts them first,
    in the same format and with the same run tag, so the UI still shows it as a table."""
    root, uri, client = store
    eid = experiment(client, root, "tables")
    rid = make_run(client, eid, 0, status="RUNNING")
    columns = ["step", "prompt", "valid"]
    tracking.log_table_newest_first(client, rid, columns, [{"step": 10, "prompt": "x", "valid": True},
                                                           {"step": 10, "prompt": "y", "valid": False}], "completions.json")
    tracking.log_table_newest_first(client, rid, columns, [{"step": 20, "prompt": "x", "valid": True}], "completions.json")
    table = json.loads(tracking.download_artifact(client, rid, "completions.json"))
    assert table == {"columns": columns, "data": [[20, "x", True], [10, "x", True], [10, "y", False]]}
    import mlflow

    before = mlflow.get_tracking_uri()  # load_table searches the runs of the process's current store, which an
    mlflow.set_tracking_uri(uri)  # earlier test of the session may have set (it wins over MLFLOW_TRACKING_URI)
    try:
        loaded = client.load_table(eid, "completions.json", run_ids=[rid])  # MLflow reads it back as its own table
    finally:
        mlflow.set_tracking_uri(before)
    assert list(loaded["step"]) == [20, 10, 10]
    tags = json.loads(client.get_run(rid).data.tags["mlflow.loggedArtifacts"])
    assert tags == [{"path": "completions.json", "type": "table"}]


def test_get_run_is_none_for_an_unknown_id(store):
    root, uri, client = store
    eid = experiment(client, root, "get_run")
    rid = make_run(client, eid, 0)
    assert tracking.get_run(client, rid).info.run_id == rid
    assert tracking.get_run(client, "0123456789abcdef0123456789abcdef") is None


def test_checkpoint_of_run_finds_the_tagged_file_and_names_what_is_missing(store, tmp_path):
    root, uri, client = store
    eid = experiment(client, root, "checkpoint_of_run")
    ckpt = tmp_path / "last.ckpt"
    ckpt.write_bytes(b"checkpoint")
    tagged = make_run(client, eid, 0, checkpoint=str(ckpt))
    assert tracking.checkpoint_of_run(uri, tagged) == ckpt

    unknown = "0123456789abcdef0123456789abcdef"
    with pytest.raises(FileNotFoundError, match=f"resume='{unknown}': no such MLflow run in {uri}"):
        tracking.checkpoint_of_run(uri, unknown)
    untagged = make_run(client, eid, 1)
    with pytest.raises(FileNotFoundError, match=r"the run has no checkpoint on disk \(tag checkpoint=None\)"):
        tracking.checkpoint_of_run(uri, untagged)
    gone = make_run(client, eid, 2, checkpoint=str(tmp_path / "deleted.ckpt"))
    with pytest.raises(FileNotFoundError, match=r"no checkpoint on disk \(tag checkpoint='.*deleted\.ckpt'\)"):
        tracking.checkpoint_of_run(uri, gone)


def test_latest_checkpoint_is_the_newest_run_with_its_file_on_disk(store, tmp_path):
    root, uri, client = store
    eid = experiment(client, root, "latest")
    old, new = tmp_path / "old.ckpt", tmp_path / "new.ckpt"
    old.write_bytes(b"old"), new.write_bytes(b"new")
    make_run(client, eid, 0, checkpoint=str(old))
    make_run(client, eid, 1, status="KILLED", checkpoint=str(new))  # killed runs resume too
    make_run(client, eid, 2, checkpoint=str(tmp_path / "deleted.ckpt"))  # newest, but its file is gone
    make_run(client, eid, 3, status="RUNNING")  # newest of all, no checkpoint yet
    assert tracking.latest_checkpoint(uri, "latest") == new
    new.unlink()
    assert tracking.latest_checkpoint(uri, "latest") == old

    for name in ("nope", None):
        with pytest.raises(FileNotFoundError, match=f"resume=last: no run of experiment {name!r} in {uri} has a checkpoint"):
            tracking.latest_checkpoint(uri, name)


def test_metric_history_is_sorted_by_step_with_the_latest_value_of_a_repeated_step(store):
    root, uri, client = store
    eid = experiment(client, root, "history")
    rid = make_run(client, eid, 0, status="RUNNING")
    for step, value, timestamp in [(2, 0.2, T0 + 2), (0, 0.0, T0), (1, 0.1, T0 + 1), (1, 0.15, T0 + 5)]:
        client.log_metric(rid, "game/duality_gap", value, timestamp=timestamp, step=step)
    assert tracking.metric_history(client, rid, "game/duality_gap") == [(0, 0.0), (1, 0.15), (2, 0.2)]
    assert tracking.metric_history(client, rid, "train/absent") == []


def test_an_eval_run_is_logged_finished_and_found_again_with_its_artifact(store, tmp_path, monkeypatch):
    root, uri, _ = store
    monkeypatch.chdir(root)  # a new experiment keeps its artifacts beside the store, as under `eval`
    out = tmp_path / "out"
    out.mkdir()
    (out / "win_rate_matrix.json").write_text(json.dumps({"policies": ["a", "b"]}))
    (out / "table.md").write_text("| a | b |\n")

    client, rid = tracking.start_eval_run(uri, "evals", ["a", "b"], "source")
    assert client.get_run(rid).info.status == "RUNNING"  # created first, so the files can name it
    assert tracking.latest_eval_run(client, "evals", "source") is None  # not finished yet
    children = tracking.log_eval_run(client, rid, {"prompts": 4, "seed": 0},
                                     {"a": {"eval/win_rate_vs_ref": 0.75}, "b": {"eval/win_rate_vs_ref": 0.25}}, out,
                                     {"a": {"policy_checkpoint": "a.ckpt"}})

    run = client.get_run(rid)
    assert run.info.status == "FINISHED" and run.info.run_name == "eval-2-policies"
    assert {k: run.data.tags[k] for k in ("command", "policies", "source_experiment")} == {
        "command": "eval", "policies": "a, b", "source_experiment": "source"}
    assert run.data.params == {"prompts": "4", "seed": "0"} and run.data.metrics == {}
    assert {a.path for a in client.list_artifacts(rid)} == {"win_rate_matrix.json", "table.md"}
    # one child run per policy, nested under the evaluation, the metric under one name for all policies
    for name, value in (("a", 0.75), ("b", 0.25)):
        child = client.get_run(children[name])
        assert child.info.status == "FINISHED" and child.info.run_name == name
        assert child.data.tags["mlflow.parentRunId"] == rid and child.data.tags["policy"] == name
        assert "source_experiment" not in child.data.tags and child.data.metrics == {"eval/win_rate_vs_ref": value}
    assert client.get_run(children["a"]).data.tags["policy_checkpoint"] == "a.ckpt"

    assert tracking.latest_eval_run(client, "evals", "source") == rid
    assert json.loads(tracking.download_artifact(client, rid, "win_rate_matrix.json")) == {"policies": ["a", "b"]}
    assert tracking.latest_eval_run(client, "evals", "other") is None
    assert tracking.latest_eval_run(client, "no_evals", "source") is None

    # a newer finished eval of the same experiment is the latest; one of policies given by path has no source
    newer_client, newer = tracking.start_eval_run(uri, "evals", ["a"], "source")
    tracking.log_eval_run(newer_client, newer, {}, {"a": {}}, out)
    _, by_path = tracking.start_eval_run(uri, "evals", ["a"], None)
    assert "source_experiment" not in client.get_run(by_path).data.tags
    assert tracking.latest_eval_run(client, "evals", "source") == newer
