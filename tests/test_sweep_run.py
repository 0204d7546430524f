"""A sweep is one MLflow run with its jobs nested under it (lit_nash/sweep_run.py), through the real CLI into a
real store: the parent holds the sweep's overrides, a description of what it asks, and when it ends compare's
table, ranking and curves; a sweep stopped by a failed job leaves its parent FAILED with what completed."""

import json

from mlflow import MlflowClient

from lit_nash.mlflow_views import VIEW_KEY, VIEW_TAG

from .cli import run_cli


def runs_of(client, experiment):
    eid = client.get_experiment_by_name(experiment).experiment_id
    parents = client.search_runs([eid], "tags.command = 'sweep'")
    return parents, client.search_runs([eid], "tags.algo != ''")


def test_a_sweep_is_one_mlflow_run_holding_its_comparison_with_its_jobs_nested(tmp_path):
    out = run_cli("fit", "-m", "sweep=mpo_magnet_period", "algo.magnet_every=10,30", "seed=0,1", "trainer.max_steps=30",
                  cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}")
    (parent,), jobs = runs_of(client, "sweep_reset_period")
    assert parent.info.status == "FINISHED" and parent.info.run_name.startswith("sweep-mpo_magnet_period-")
    assert len(jobs) == 4 and {j.data.tags["mlflow.parentRunId"] for j in jobs} == {parent.info.run_id}
    # its params: the sweep's overrides and its preset's grid, as given
    assert parent.data.params["algo.magnet_every"] == "10,30" and parent.data.params["seed"] == "0,1"
    assert parent.data.params["trainer.max_steps"] == "30" and parent.data.params["sweep"] == "mpo_magnet_period"
    # its description: what the sweep asks (the preset's header), then the ranking by the mean over seeds
    note = parent.data.tags["mlflow.note.content"]
    assert note.startswith("Sweep `mpo_magnet_period`.\n\nRanked by duality gap (original game), mean over the last window")
    assert "| rank | algo, magnet_every | summary/gap_window: mean ± 95% CI (seeds) |" in note
    assert "mpo magnet_every=30" in note and "(2 seeds)" in note
    assert "The reset-period ablation, MPO half:" in note and "written here when the sweep ends" not in note
    # the ranking as its metrics too: the parent's metrics table says who won
    m = parent.data.metrics
    assert sorted(m[f"rank/mpo magnet_every_{p}"] for p in (10, 30)) == [1, 2]
    assert all(m[f"ci95/mpo magnet_every_{p}"] >= 0 and f"mean/mpo magnet_every_{p}" in m for p in (10, 30))
    # compare's outputs as its artifacts, the table and the ranking also as MLflow tables
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"table.md", "table.csv", "ranking.md", "ranking.csv", "curve_game_duality_gap.png",
            "curve_game_duality_gap.pdf"} <= artifacts
    tables = {a["path"] for a in json.loads(parent.data.tags["mlflow.loggedArtifacts"]) if a["type"] == "table"}
    assert tables == {"table.json", "ranking.json"}
    ranking = json.loads(open(client.download_artifacts(parent.info.run_id, "ranking.json", str(tmp_path))).read())
    assert [row[1] for row in ranking["data"]][0] in ("mpo magnet_every=10", "mpo magnet_every=30")
    assert [row[0] for row in ranking["data"]] == [1, 2]
    # the experiment: the sweep's description and the lit_nash view of its runs
    experiment = client.get_experiment_by_name("sweep_reset_period")
    assert experiment.tags["mlflow.note.content"].startswith("Sweep `mpo_magnet_period`: The reset-period ablation")
    assert f"viewStateShareKey={VIEW_KEY}" in experiment.tags["mlflow.note.content"]
    envelope = json.loads(experiment.tags[VIEW_TAG])  # a saved view: listed under the page's Views menu
    assert envelope["name"] == "lit_nash: algorithms side by side" and envelope["createdAt"] > 0
    view = json.loads(envelope["state"])
    assert "metrics.`summary/gap_window`" in view["selectedColumns"] and view["runsHiddenMode"] == "SHOW_ALL"
    assert view["groupBy"]["groupByKeys"] == [{"mode": "tag", "groupByData": "algo"}]
    # compare over the experiment does not take the sweep's own run for an (incomplete) training run
    out = run_cli("compare", "experiment=sweep_reset_period", f"out={tmp_path / 'cmp'}", cwd=tmp_path)
    assert out.returncode == 0 and "incomplete" not in out.stdout and "4 finished runs" in out.stdout, out.stdout
    # each job's run has its own description
    assert all(j.data.tags["mlflow.note.content"].startswith("mpo on comal_cycle (exact play)") for j in jobs)


def test_a_sweep_stopped_by_a_failed_job_leaves_its_parent_failed_with_what_completed(tmp_path):
    out = run_cli("fit", "-m", "seed=0,-1", "trainer.max_steps=20", "trainer.enable_progress_bar=false", cwd=tmp_path)
    assert out.returncode != 0 and "seed must be an integer" in out.stderr
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}")
    (parent,), jobs = runs_of(client, "lit_nash")
    assert parent.info.status == "FAILED" and len(jobs) == 1 and jobs[0].info.status == "FINISHED"
    assert "table.md" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert "| mpo | 1 |" in open(client.download_artifacts(parent.info.run_id, "table.md", str(tmp_path))).read()
