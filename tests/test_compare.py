"""``python -m lit_nash compare`` end to end: a real ``fit`` multirun into an MLflow store, read back."""

import csv

import numpy as np
import pytest
from matplotlib.image import imread

from .cli import run_cli, run_many

METRICS = ["game/duality_gap", "game/reg_duality_gap", "game/avg_duality_gap", "game/exploitability", "game/kl_to_ne"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """2 algorithms × 2 seeds on a seeded random matrix game (the seeds draw different games)."""
    cwd = tmp_path_factory.mktemp("store")
    out = run_cli("fit", "-m", "algo=mpo,egpo", "seed=0,1", "game=egpo_random", "trainer.max_steps=200",
                  "trainer.enable_progress_bar=false", cwd=cwd)
    assert out.returncode == 0, out.stderr[-3000:]
    return cwd


def read_table(path):
    with open(path, newline="") as f:
        return {row["algo"]: row for row in csv.DictReader(f)}


def test_compare_writes_a_table_over_seeds_and_a_plot_per_metric(store):
    cmp = store / "cmp"
    out = run_cli("compare", f"out={cmp}", cwd=store)
    assert out.returncode == 0, out.stderr[-3000:]

    table = read_table(cmp / "table.csv")
    assert sorted(table) == ["egpo", "mpo"]
    for row in table.values():
        assert row["n_seeds"] == "2" and row["seeds"] == "0 1"
        for metric in METRICS:
            assert row[f"{metric}_n"] == "2"
            assert np.isfinite(float(row[f"{metric}_mean"])) and float(row[f"{metric}_std"]) >= 0
    # the seeds draw different games: the spread over seeds is real (and the mean is not one seed's value)
    assert float(table["mpo"]["game/duality_gap_std"]) > 0
    # EGPO converges to the regularized equilibrium; MPO (τ = 0.1 toward a moving magnet) does not
    assert abs(float(table["egpo"]["game/reg_duality_gap_mean"])) < 1e-10
    assert float(table["mpo"]["game/duality_gap_mean"]) < float(table["egpo"]["game/duality_gap_mean"])

    markdown = (cmp / "table.md").read_text()
    assert "| algo | seeds | " + " | ".join(METRICS) + " |" in markdown
    rows = [line for line in markdown.splitlines() if line.startswith(("| egpo |", "| mpo |"))]
    assert len(rows) == 2 and all(line.count(" ± ") == len(METRICS) for line in rows)  # mean ± 95% half-width
    assert markdown.strip() in out.stdout  # the printed table is the saved one

    for metric in METRICS:
        png = cmp / f"curve_{metric.replace('/', '_')}.png"
        assert str(png.name) in out.stdout and png.with_suffix(".pdf").read_bytes()[:4] == b"%PDF"
        image = imread(png)
        height, width = image.shape[:2]
        assert width > 200 and height > 200
        assert image.reshape(-1, image.shape[-1]).std(axis=0).max() > 0.01, f"{png.name} is one colour"
    assert str(cmp) in out.stdout


def test_compare_filter_selects_runs(store):
    cmp = store / "cmp_mpo"
    out = run_cli("compare", "filter=\"tags.algo = 'mpo'\"", "metrics=[game/duality_gap,train/absent]",
                  f"out={cmp}", cwd=store)
    assert out.returncode == 0, out.stderr[-3000:]
    assert list(read_table(cmp / "table.csv")) == ["mpo"]
    assert sorted(p.name for p in cmp.glob("curve_*")) == ["curve_game_duality_gap.pdf", "curve_game_duality_gap.png"]  # train/absent: no run has it


def test_compare_names_an_unknown_experiment_and_the_existing_ones(store):
    out = run_cli("compare", "experiment=nope", f"out={store}/never", cwd=store)
    assert out.returncode != 0
    assert "no experiment 'nope'" in out.stderr and "'lit_nash'" in out.stderr
    assert not (store / "never").exists()


def test_compare_writes_only_its_out_folder(tmp_path):
    """No run folder (outputs/DATE/TIME looks like a fit run's), no .hydra/ or compare.log in the working
    directory: neither when compare fails nor when it writes its default out, compare/."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}")
    run = client.create_run(client.create_experiment("lit_nash", artifact_location=str(tmp_path / "mlruns")),
                            tags={"algo": "mpo", "seed": "0"})
    client.log_metric(run.info.run_id, "game/duality_gap", 0.5, step=0)
    client.set_terminated(run.info.run_id)
    before = {p.name for p in tmp_path.iterdir()}
    assert run_cli("compare", "experiment=nope", cwd=tmp_path).returncode != 0
    assert {p.name for p in tmp_path.iterdir()} == before
    out = run_cli("compare", "eval_experiment=null", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert {p.name for p in tmp_path.iterdir()} == before | {"compare"}
    assert sorted(p.name for p in (tmp_path / "compare").iterdir()) == [
        "curve_game_duality_gap.pdf", "curve_game_duality_gap.png", "ranking.csv", "ranking.md", "table.csv", "table.md"]


def test_compare_says_when_no_run_matches_the_filter(store):
    out = run_cli("compare", "filter=\"tags.game = 'comal_cycle'\"", cwd=store)
    assert out.returncode != 0
    assert "no finished runs in experiment 'lit_nash'" in out.stderr and "comal_cycle" in out.stderr


def test_compare_without_a_store_exits_nonzero_and_creates_none(tmp_path):
    out = run_cli("compare", cwd=tmp_path)
    assert out.returncode != 0
    assert "no MLflow store" in out.stderr and str(tmp_path / "mlruns.db") in out.stderr
    assert not (tmp_path / "mlruns.db").exists()


def test_compare_groups_by_a_list_of_tags_and_logged_params(store):
    """group_by=[algo,params.algo.tau,params.algo.eta]: one row per combination of the run's algo tag and its
    logged config values (fit logs the flattened config as MLflow params), labelled `egpo tau=0.1 eta=2`,
    sorted by value with numbers as numbers (eta 2 before 10); the CSV has a column per key."""
    out = run_cli("fit", "-m", "algo=egpo,nash_mp", "algo.eta=10,2", "trainer.max_steps=20", "logger.experiment_name=grid",
                  "trainer.enable_progress_bar=false", cwd=store)  # its own experiment in the module's store
    assert out.returncode == 0, out.stderr[-3000:]

    cmp = store / "cmp_grid"
    out = run_cli("compare", "experiment=grid", "group_by=[algo,params.algo.tau,params.algo.eta]", "metrics=[game/duality_gap]",
                  f"out={cmp}", cwd=store)
    assert out.returncode == 0, out.stderr[-3000:]
    labels = ["egpo tau=0.1 eta=2", "egpo tau=0.1 eta=10", "nash_mp tau=0.1 eta=2", "nash_mp tau=0.1 eta=10"]
    with open(cmp / "table.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["group"] for r in rows] == labels
    assert [(r["algo"], r["params.algo.tau"], r["params.algo.eta"]) for r in rows] == [
        ("egpo", "0.1", "2"), ("egpo", "0.1", "10"), ("nash_mp", "0.1", "2"), ("nash_mp", "0.1", "10")]
    assert all(r["n_seeds"] == "1" and r["seeds"] == "0" for r in rows)
    markdown = (cmp / "table.md").read_text()
    assert markdown.startswith("| algo, tau, eta | seeds | game/duality_gap |")
    assert [line.split(" | ")[0].lstrip("| ") for line in markdown.splitlines()[2:6]] == labels
    assert "grouped by algo, params.algo.tau, params.algo.eta" in out.stdout

    # a key some runs lack is left out of their labels (nash_mp has no magnet_every); a run lacking every key is left out
    from lit_nash import tracking
    from lit_nash.run_groups import grouped, load

    client = tracking.client(f"sqlite:///{store}/mlruns.db")
    keys = ["algo", "params.algo.magnet_every"]
    runs = tracking.all_runs(client, client.get_experiment_by_name("lit_nash").experiment_id, None)
    groups, _ = grouped(load(client, runs, keys, ["game/duality_gap"]), keys)
    assert list(groups) == ["egpo", "mpo magnet_every=100"] and all(len(runs) == 2 for runs in groups.values())
    out = run_cli("compare", "experiment=grid", "group_by=[params.algo.nothing]", f"out={cmp}_none", cwd=store)
    assert out.returncode != 0 and "params.<config key>" in out.stderr and "params.algo.nothing" in out.stderr


def test_compare_of_text_runs_defaults_to_the_metrics_they_logged(text_models, tmp_path):
    """Text runs log no game/* metric, compare's default: it compares every train/* and eval/* metric the runs
    logged instead, and says so. Here EGPO evaluates during training and online IPO does not: the eval/*
    metrics are EGPO's only (online IPO's cells are empty), train/loss is both's."""
    common = ["task=text", f"data.path={text_models['plain']}", f"policy.model_path={text_models['policy']}",
              f"preference.path={text_models['pairwise']}", "rollout.prompts_per_step=2", "policy.max_new_tokens=6",
              "trainer.max_steps=4", "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false"]
    from mlflow import MlflowClient

    MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}").create_experiment(  # not by two runs at once
        "lit_nash", artifact_location=str(tmp_path / "mlruns"))
    done = run_many(
        (("fit", "algo=egpo", "eval.every_n_steps=2", "eval.prompts=2", "eval.samples=2", "eval.table_rows=0", *common),
         {"cwd": tmp_path}),
        (("fit", "algo=online_ipo", *common), {"cwd": tmp_path}),
    )
    assert all(d.returncode == 0 for d in done), [(d.returncode, d.stdout[-1500:], d.stderr[-3000:]) for d in done]
    out = run_cli("compare", f"out={tmp_path / 'cmp'}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    used = ["eval/win_rate_vs_ref", "eval/win_rate_vs_snapshot", "train/loss"]  # not the eval_ci95/ intervals
    assert "the runs logged none of metrics=['game/duality_gap'" in out.stdout
    assert f"comparing the train/* and eval/* metrics they logged instead: {', '.join(used)}" in out.stdout
    table = read_table(tmp_path / "cmp" / "table.csv")
    assert sorted(table) == ["egpo", "online_ipo"]
    assert table["egpo"]["eval/win_rate_vs_ref_n"] == "1" and table["online_ipo"]["eval/win_rate_vs_ref_n"] == "0"
    assert all(row["train/loss_n"] == "1" for row in table.values())
    assert "| algo | seeds | " + " | ".join(used) + " |" in (tmp_path / "cmp" / "table.md").read_text()
    assert (tmp_path / "cmp" / "curve_train_loss.png").is_file()


def test_compare_never_averages_different_tasks_and_counts_each_seed_once(tmp_path):
    """Issue 16: runs of two games (and of two lengths) in one experiment were averaged as if they were
    seeds, and a repeated seed counted twice. Each task is its own row now, named; a rerun seed counts once."""
    for args in (["-m", "game=comal_cycle,weighted_rps", "seed=0,1", "trainer.max_steps=10"],
                 ["seed=0", "trainer.max_steps=10"], ["seed=0", "trainer.max_steps=5"]):
        out = run_cli("fit", *args, "algo=mpo", "trainer.enable_progress_bar=false", cwd=tmp_path)
        assert out.returncode == 0, out.stderr[-3000:]
    out = run_cli("compare", f"out={tmp_path / 'cmp'}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "the runs are of 3 different tasks (comal_cycle (3 responses), exact, 5 steps; comal_cycle (3 responses), " \
           "exact, 10 steps; weighted_rps (3 responses), exact, 10 steps): each group is split by task" in out.stdout
    assert "1 run(s) repeat a seed of their group; each seed counts once" in out.stdout
    with open(tmp_path / "cmp" / "table.csv", newline="") as f:
        rows = {row["group"]: row for row in csv.DictReader(f)}
    assert {k: (v["n_seeds"], v["seeds"]) for k, v in rows.items()} == {
        "mpo [comal_cycle (3 responses), exact, 10 steps]": ("2", "0 1"),  # seed 0 twice: the rerun replaces the first
        "mpo [comal_cycle (3 responses), exact, 5 steps]": ("1", "0"),
        "mpo [weighted_rps (3 responses), exact, 10 steps]": ("2", "0 1"),
    }


def test_compare_ranks_by_the_mean_over_seeds_with_its_interval_and_shows_one_seed_as_its_count(store):
    """Issue 26: the ranking is the mean over seeds of each run's window-mean gap, with its 95% t-interval; one
    seed is shown with its count, never as "± 0"."""
    from mlflow import MlflowClient
    from scipy.stats import t

    cmp = store / "cmp_rank"
    out = run_cli("compare", f"out={cmp}", cwd=store)
    assert out.returncode == 0, out.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{store}/mlruns.db")
    runs = client.search_runs([client.get_experiment_by_name("lit_nash").experiment_id], "tags.algo != ''")
    window = {a: [r.data.metrics["summary/gap_window"] for r in runs if r.data.tags["algo"] == a] for a in ("egpo", "mpo")}
    with open(cmp / "ranking.csv", newline="") as f:
        ranked = list(csv.DictReader(f))
    assert [r["group"] for r in ranked] == sorted(window, key=lambda a: np.mean(window[a]))
    for row in ranked:
        values = window[row["group"]]
        half = t.ppf(0.975, 1) * np.std(values, ddof=1) / np.sqrt(2)
        assert float(row["summary/gap_window_mean"]) == pytest.approx(np.mean(values))
        assert float(row["summary/gap_window_ci95_high"]) == pytest.approx(np.mean(values) + half)
    ranking = (cmp / "ranking.md").read_text()
    assert "Ranked by duality gap (original game), mean over the last window (summary/gap_window)" in ranking
    assert "(2 seeds)" in ranking and ranking in out.stdout + "\n"

    one = run_cli("compare", "filter=\"tags.seed = '0'\"", f"out={cmp}_seed0", cwd=store)
    assert one.returncode == 0, one.stderr[-3000:]
    table = (cmp.parent / "cmp_rank_seed0" / "table.md").read_text()
    assert "± 0 " not in table and "(n=1)" in table and "(1 seed)" in (cmp.parent / "cmp_rank_seed0" / "ranking.md").read_text()


def test_compare_takes_the_x_axis_step_time_or_any_logged_metric(store):
    """x=time and x=<metric> (issue 22): here x=game/exploitability, a metric every game run logs, under which the
    duality gap, exactly twice the exploitability, is the line y = 2x; and an unknown x is refused in one line."""
    from lit_nash import tracking
    from lit_nash.run_groups import load

    for x in ("time", "game/exploitability"):
        out = run_cli("compare", f"x={x}", "metrics=[game/duality_gap]", f"out={store}/cmp_x_{x.replace('/', '_')}", cwd=store)
        assert out.returncode == 0, out.stderr[-3000:]
        assert (store / f"cmp_x_{x.replace('/', '_')}" / "curve_game_duality_gap.png").is_file()
    client = tracking.client(f"sqlite:///{store}/mlruns.db")
    runs = tracking.all_runs(client, client.get_experiment_by_name("lit_nash").experiment_id, "tags.algo != ''")
    (run, *_) = load(client, runs, ["algo"], ["game/duality_gap"], x="game/exploitability")
    points = run.history["game/duality_gap"]
    assert len(points) == 20 and all(y == pytest.approx(2 * x, abs=1e-12) for x, y in points)
    (timed, *_) = load(client, runs, ["algo"], ["game/duality_gap"], x="time")
    seconds = [x for x, _ in timed.history["game/duality_gap"]]
    assert seconds[0] == 0 and seconds == sorted(seconds) and seconds[-1] < 600
    bad = run_cli("compare", "x=pref/queriez", cwd=store)
    assert bad.returncode != 0 and "x='pref/queriez': no run logged it" in bad.stderr and "game/duality_gap" in bad.stderr


def log_run(client, experiment_id, algo, seed, steps, max_steps, status="FINISHED", queries_per_step=None):
    """A run as fit logs one: tags algo/seed, the param trainer.max_steps, game/duality_gap every step."""
    run = client.create_run(experiment_id, tags={"algo": algo, "seed": str(seed)}, run_name=f"{algo}-seed{seed}")
    rid = run.info.run_id
    client.log_param(rid, "trainer.max_steps", max_steps)
    for s in range(steps):
        client.log_metric(rid, "game/duality_gap", 1.0 / (s + 1 + seed), step=s, timestamp=1000 * s)
        if queries_per_step:
            client.log_metric(rid, "pref/queries", queries_per_step * (s + 1), step=s, timestamp=1000 * s)
    client.set_terminated(rid, status)
    return rid


def test_compare_never_mixes_incomplete_runs_into_a_mean_and_plots_against_preference_queries(tmp_path):
    """Issue 25: runs stopped early (KILLED, FAILED, still RUNNING, or FINISHED short of trainer.max_steps) are
    listed apart with their last step, and the means are the complete runs'. Issue 22: x=pref/queries, a
    cumulative count logged every step (logged here as fit's rollout will log it)."""
    from mlflow import MlflowClient

    from lit_nash import tracking
    from lit_nash.run_groups import load

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}")
    eid = client.create_experiment("lit_nash", artifact_location=str(tmp_path / "mlruns"))
    for seed in (0, 1):
        log_run(client, eid, "mpo", seed, 10, 10, queries_per_step=16)
    log_run(client, eid, "mpo", 2, 4, 10, status="KILLED", queries_per_step=16)
    log_run(client, eid, "mpo", 3, 6, 10, status="FINISHED", queries_per_step=16)  # FINISHED, yet 6 of 10 steps
    log_run(client, eid, "comal", 0, 10, 10, queries_per_step=8)
    running = client.create_run(eid, tags={"algo": "comal", "seed": "1"}, run_name="comal-seed1")
    client.log_param(running.info.run_id, "trainer.max_steps", 10)
    out = run_cli("compare", "x=pref/queries", "eval_experiment=null", f"out={tmp_path / 'cmp'}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    with open(tmp_path / "cmp" / "table.csv", newline="") as f:
        rows = {row["algo"]: row for row in csv.DictReader(f)}
    assert (rows["mpo"]["n_seeds"], rows["mpo"]["seeds"]) == ("2", "0 1") and rows["comal"]["n_seeds"] == "1"
    assert float(rows["mpo"]["game/duality_gap_mean"]) == pytest.approx((1 / 10 + 1 / 11) / 2)
    table = (tmp_path / "cmp" / "table.md").read_text()
    assert "Incomplete runs, not in any mean" in table
    assert "| mpo-seed2 | mpo | 2 | KILLED | 4 of 10 |" in table
    assert "| mpo-seed3 | mpo | 3 | FINISHED | 6 of 10 |" in table
    assert "| comal-seed1 | comal | 1 | RUNNING | none logged of 10 |" in table
    assert "3 finished runs" in out.stdout and "3 incomplete run(s) listed apart" in out.stdout
    runs = tracking.all_runs(client, eid, "tags.algo = 'mpo' and tags.seed = '0'")
    (run,) = load(client, runs, ["algo"], ["game/duality_gap"], x="pref/queries")
    assert [x for x, _ in run.history["game/duality_gap"]] == [16.0 * (s + 1) for s in range(10)]


def test_compare_says_when_settings_make_two_algorithms_the_same(tmp_path):
    """Issue 26: MPO and MMD gave identical rows at a shortened horizon with no word why. MPO whose magnet
    period is at least the run's length never moves its magnet: it is MMD, and the table says so."""
    from mlflow import MlflowClient

    MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}").create_experiment("lit_nash", artifact_location=str(tmp_path / "mlruns"))
    common = ("trainer.max_steps=30", "trainer.enable_progress_bar=false")
    done = run_many((("fit", "algo=mpo", "algo.magnet_every=100", *common), {"cwd": tmp_path}),
                    (("fit", "algo=mmd", *common), {"cwd": tmp_path}))
    assert all(d.returncode == 0 for d in done), [d.stderr[-2000:] for d in done]
    out = run_cli("compare", "eval_experiment=null", f"out={tmp_path / 'cmp'}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    note = ("mmd and mpo are the same algorithm here: MPO with algo.magnet_every=100 and trainer.max_steps=30 never "
            "moves its magnet off the reference: it is MMD with the same settings (their curves are identical seed by seed)")
    assert note in (tmp_path / "cmp" / "table.md").read_text() and note in out.stdout
