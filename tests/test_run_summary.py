"""The scalar results a run logs at its end (lit_nash/run_summary.py), the converged tags and the run's
description, and MLflow's system metrics on every fit: one real fit through the CLI, read back from its store,
and the summary rules on histories built here."""

import pytest
from mlflow import MlflowClient

from lit_nash import glossary as g
from lit_nash.run_summary import reg_ne_gap, stays_below, summarize, window_mean

from .cli import run_cli


def points(values, every=1, t0=1_000_000):
    """A history logged every ``every`` steps, one second apart."""
    return [(i * every, v, t0 + 1000 * i) for i, v in enumerate(values)]


def test_window_mean_and_the_first_step_from_which_a_gap_stays_below_epsilon():
    gap = points([1.0, 0.5, 0.02, 0.2, 0.02, 0.01], every=10)  # steps 0..50: below 0.03 for good from step 40
    assert stays_below(gap, 0.03) == (40, 0.02, 1_004_000)
    assert stays_below(points([0.01, 0.5]), 0.03) is None  # the last value is above: never reached
    assert window_mean(gap, 1 / 6) == pytest.approx(0.01)  # the last sixth of 60 steps: step 50 only
    assert window_mean(gap, 0.5) == pytest.approx((0.2 + 0.02 + 0.01) / 3)  # steps >= 30


def test_a_run_at_the_ne_and_one_at_the_regularized_ne_and_one_that_cycles():
    ne = {"game/duality_gap": points([0.5, 0.1, 0.01, 0.005]), "game/reg_duality_gap": points([0.5, 0.1, 0.03, 0.03]),
          "pref/queries": [(s, 8.0 * (s + 1), 0) for s in range(4)], "game/avg_duality_gap": points([0.5, 0.3, 0.1, 0.02])}
    metrics, tags = summarize(ne, epsilon=0.03, window=0.5, seconds=7.0, steps=4, complete=True, reg_ne_gap=0.0245)
    assert tags == {"converged": "true", "converged_to": "NE"}
    assert metrics[g.GAP] == 0.005 and metrics[g.GAP_WINDOW] == pytest.approx(0.0075)
    assert metrics[g.STEPS_TO_EPS] == 3 and metrics[g.QUERIES_TO_EPS] == 24 and metrics[g.SECONDS_TO_EPS] == 2
    assert metrics[g.AVG_GAP] == 0.02 and metrics[g.AVG_STEPS_TO_EPS] == 4 and metrics[g.REG_NE_GAP] == 0.0245
    assert metrics[g.WALL_TIME] == 7.0 and metrics[g.STEPS] == 4

    reg = {"game/duality_gap": points([0.5, 0.1, 0.03, 0.025]), "game/reg_duality_gap": points([0.4, 0.05, 0.01, 0.0])}
    metrics, tags = summarize(reg, 0.02, 0.5, 1.0, 4, True, reg_epsilon=0.02)
    assert tags == {"converged": "true", "converged_to": "regularized NE"}
    assert metrics[g.STEPS_TO_EPS] == 3  # counted on the regularized gap it converged in
    assert g.QUERIES_TO_EPS not in metrics  # the run logged no pref/queries

    cycling = {"game/duality_gap": points([0.5, 0.01, 0.5, 0.01, 0.5]), "game/reg_duality_gap": points([0.4] * 5)}
    metrics, tags = summarize(cycling, 0.03, 1 / 6, 1.0, 5, True)
    assert tags == {"converged": "false", "converged_to": "none"} and g.STEPS_TO_EPS not in metrics
    # a run stopped before its max_steps gets no verdict
    assert summarize(cycling, 0.03, 1 / 6, 1.0, 3, complete=False)[1] == {}


def test_each_run_is_judged_on_its_own_target():
    """A π*_τ method sitting at π*_τ of the 3-cycle (NE gap 0.0245, below ε = 0.03) converged to the regularized
    NE, not to the NE; one whose regularized gap stays above reg_epsilon did not converge, whatever its NE gap;
    an NE method is judged on the NE gap only."""
    at_reg = {"game/duality_gap": points([0.06, 0.03, 0.0245, 0.0245]),
              "game/reg_duality_gap": points([7e-3, 1e-3, 1e-5, 1e-6])}
    metrics, tags = summarize(at_reg, 0.03, 0.5, 1.0, 4, True, target="regularized NE", reg_epsilon=1e-3)
    assert tags == {"converged": "true", "converged_to": "regularized NE"}
    assert metrics[g.STEPS_TO_EPS] == 2  # the regularized gap stays at most 1e-3 from step 1 (after 2 steps)
    assert summarize(at_reg, 0.03, 0.5, 1.0, 4, True)[1]["converged_to"] == "NE"  # no target: the NE gap first
    near = {"game/duality_gap": points([0.06, 0.02, 0.02, 0.02]), "game/reg_duality_gap": points([7e-3, 5e-3, 4e-3, 4e-3])}
    metrics, tags = summarize(near, 0.03, 0.5, 1.0, 4, True, target="regularized NE", reg_epsilon=1e-3)
    assert tags == {"converged": "false", "converged_to": "none"} and g.STEPS_TO_EPS not in metrics
    assert summarize(at_reg, 0.01, 0.5, 1.0, 4, True, target="NE", reg_epsilon=1e-3)[1]["converged_to"] == "none"


def test_a_text_run_summarizes_its_loss_and_win_rate():
    metrics, tags = summarize({"train/loss": points([2.0, 1.0, 0.5, 0.3]), "eval/win_rate_vs_ref": points([0.5, 0.7])},
                              0.03, 0.5, 3.0, 4, True)
    assert tags == {} and metrics[g.LOSS] == 0.3 and metrics[g.LOSS_WINDOW] == pytest.approx(0.4)
    assert metrics[g.WIN_RATE] == 0.7 and g.GAP not in metrics


def test_the_reference_level_is_the_duality_gap_of_the_regularized_equilibrium():
    import torch

    from lit_nash.games import comal_cycle

    P = comal_cycle().P
    uniform = torch.full((P.shape[0], P.shape[-1]), 1.0 / P.shape[-1]).log()
    assert reg_ne_gap(P, uniform, 0.1) == pytest.approx(0.0245, abs=5e-5)  # issue 22: π*_τ's gap on the 3-cycle


def test_a_fit_logs_its_summary_its_verdict_its_description_and_system_metrics(tmp_path):
    out = run_cli("fit", "trainer.max_steps=300", "trainer.enable_progress_bar=false", "logger.system_metrics_every=1",
                  cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "system metrics" not in out.stderr.lower()  # MLflow's monitor messages go to the log file only
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("lit_nash").experiment_id])
    m, tags = run.data.metrics, run.data.tags
    assert m[g.GAP] == m["game/duality_gap"] < 0.03 and m[g.STEPS] == 300 and m[g.WALL_TIME] > 0
    assert m[g.REG_NE_GAP] == pytest.approx(0.0245, abs=5e-5) and 1 <= m[g.STEPS_TO_EPS] <= 300
    assert tags["converged"] == "true" and tags["converged_to"] == "NE"  # exact MPO reaches the NE
    assert tags["mlflow.note.content"].startswith("mpo on comal_cycle (exact play), seed 0, 300 of 300 optimizer steps")
    assert "Converged to the NE" in tags["mlflow.note.content"]
    # the runs table can sort by them: an MLflow search orders the runs by a summary metric
    assert client.search_runs([run.info.experiment_id], order_by=[f"metrics.`{g.GAP_WINDOW}` ASC"])
    # MLflow's system metrics, at least one sample of CPU and memory
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= set(m)
    assert m["system/cpu_utilization_percentage"] > 0  # a sample at the end covers the run (the start reads 0)
    # the duality gap is the run's first metric (MLflow's Compare page colours its plot by the first)
    assert run.data._metric_objs[0].key == "game/duality_gap"


def test_a_method_that_stops_at_the_regularized_ne_is_tagged_so(tmp_path):
    """Exact EGPO on the 3-cycle ends at π*_τ, whose duality gap (0.0245) is below summary.epsilon: its verdict
    names its own target, the regularized NE (issue 26's defect tagged it converged to the NE)."""
    out = run_cli("fit", "algo=egpo", "trainer.max_steps=300", "trainer.enable_progress_bar=false", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("lit_nash").experiment_id])
    m, tags = run.data.metrics, run.data.tags
    assert tags["target"] == "regularized NE" and m[g.GAP_WINDOW] == pytest.approx(0.0245, abs=1e-3)
    assert tags["converged_to"] == "regularized NE" and m[g.REG_GAP_WINDOW] <= 1e-3
    assert "Converged to the regularized NE" in tags["mlflow.note.content"]
