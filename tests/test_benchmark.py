"""Issue 22.4, the NLHF benchmark: ``compare mode=benchmark`` reads a benchmark sweep's runs back into the
table of what each algorithm paid (optimizer steps, preference queries, seconds) until the gap to its own
target first stays below ε, last and average iterate, and the figure against preference queries. One small
instance through the real CLI, Hydra and MLflow, its crossings checked against the exact dynamics re-derived
here with numpy; and the table's rules on runs built here."""

import csv
from importlib.resources import files

import numpy as np
import pytest
from matplotlib.image import imread
from omegaconf import OmegaConf

from lit_nash.benchmark_table import cell, epsilon_of, rows, to_markdown
from lit_nash.run_groups import Run

from .cli import REPO, run_cli

# COMAL's 3-cycle, written out: P[i][j] = P(i ≻ j); b beats a 0.9, c beats b 0.9, a beats c 0.8
P = np.array([[0.5, 0.1, 0.8], [0.9, 0.5, 0.1], [0.2, 0.9, 0.5]])
STEPS, LOG_EVERY = 60, 5  # the run's optimizer steps; the sweep logs exact play's gaps every 5 steps


def shipped(path: str):
    return OmegaConf.load(files("lit_nash.conf").joinpath(path).open())


def duality_gap(pi):
    return 2 * (P @ pi).max() - 1


def reg_duality_gap(pi, mu, tau):
    """2τ·log Σ μ·exp(Pπ/τ) − 1 + 2τ·KL(π‖μ): 0 exactly at π*_τ(μ)."""
    return 2 * tau * np.log((mu * np.exp(P @ pi / tau)).sum()) - 1 + 2 * tau * (pi * np.log(pi / mu)).sum()


def softmax(l):
    e = np.exp(l - l.max())
    return e / e.sum()


def iterates(step, n):
    """π_1 … π_n from the uniform start under an exact update ``step(l, π) -> l'``."""
    l, out = np.log(np.full(3, 1 / 3)), []
    for _ in range(n):
        l = step(l, softmax(l))
        out.append(softmax(l))
    return out


def first_staying_below(gaps, epsilon):
    """The optimizer steps until the gap, read on the logged steps (after 5, 10, … steps), stays ≤ ε."""
    logged = [(n, gaps[n - 1]) for n in range(LOG_EVERY, STEPS + 1, LOG_EVERY)]
    above = [n for n, g in logged if g > epsilon]
    return logged[0][0] if not above else next(n for n, _ in logged if n > above[-1])


@pytest.fixture(scope="module")
def benchmark(tmp_path_factory):
    """MMD (converges to π*_τ, last iterate) and SPPO (the NE, on average) in exact play on the 3-cycle: the
    benchmark sweep of the 3-cycle, narrowed to them and 60 steps, then compare mode=benchmark."""
    cwd = tmp_path_factory.mktemp("benchmark")
    out = run_cli("fit", "-m", "sweep=benchmark_comal_cycle", "algo=mmd,sppo", "rollout=exact", "seed=0",
                  f"trainer.max_steps={STEPS}", cwd=cwd)
    assert out.returncode == 0, out.stderr[-3000:]
    out = run_cli("compare", "experiment=sweep_benchmark", "mode=benchmark", "out=cmp", cwd=cwd)
    assert out.returncode == 0, out.stderr[-3000:]
    with open(cwd / "cmp" / "benchmark_runs.csv", newline="") as f:
        runs = {row["algo"]: row for row in csv.DictReader(f)}
    return cwd / "cmp", runs, out.stdout


def test_the_crossings_are_those_of_the_exact_dynamics(benchmark):
    """MMD's exact step l' = (l + ητ·log μ + η·Pπ)/(1 + ητ) and SPPO's l' = l + η·Pπ, iterated here: the step at
    which MMD's regularized gap and SPPO's average iterate's duality gap first stay below the shipped ε, and the
    preference queries by then (one exact evaluation of Pπ per step reads the 3 pairs of the 3-cycle)."""
    _, runs, _ = benchmark
    epsilon = shipped("compare.yaml").benchmark.epsilon.comal_cycle
    mmd, sppo = shipped("algo/mmd.yaml"), shipped("algo/sppo.yaml")
    mu = np.full(3, 1 / 3)
    a = mmd.eta * mmd.tau
    mmd_pi = iterates(lambda l, pi: (l + a * np.log(mu) + mmd.eta * P @ pi) / (1 + a), STEPS)
    reg = [reg_duality_gap(pi, mu, mmd.tau) for pi in mmd_pi]
    mmd_avg = [reg_duality_gap(np.mean(mmd_pi[:n], axis=0), mu, mmd.tau) for n in range(1, STEPS + 1)]
    sppo_pi = iterates(lambda l, pi: l + sppo.eta * P @ pi, STEPS)
    sppo_avg = [duality_gap(np.mean(sppo_pi[:n], axis=0)) for n in range(1, STEPS + 1)]

    row = runs["mmd"]
    assert (row["target"], row["gap"], float(row["epsilon"]), row["claims"]) == (
        "regularized NE", "game/reg_duality_gap", epsilon.reg, "last")
    steps = first_staying_below(reg, epsilon.reg)
    assert LOG_EVERY < steps < STEPS  # a real crossing, after the first logged step
    assert int(row["last_steps"]) == steps and float(row["last_queries"]) == 3 * steps
    assert int(row["average_steps"]) == first_staying_below(mmd_avg, epsilon.reg)
    assert float(row["last_final_gap"]) == pytest.approx(reg[-1], abs=1e-12)

    row = runs["sppo"]
    assert (row["target"], row["gap"], float(row["epsilon"]), row["claims"]) == ("NE", "game/duality_gap", epsilon.ne, "average")
    assert row["last_steps"] == ""  # MWU's last iterate cycles: never below ε
    steps = first_staying_below(sppo_avg, epsilon.ne)
    assert int(row["average_steps"]) == steps and float(row["average_queries"]) == 3 * steps
    assert float(row["average_final_gap"]) == pytest.approx(sppo_avg[-1], abs=1e-12)
    assert float(row["average_seconds"]) >= 0 and float(row["last_final_gap"]) > 0.1


def test_the_table_marks_the_claimed_iterate_and_the_figure_is_drawn(benchmark):
    cmp, runs, stdout = benchmark
    table = (cmp / "benchmark.md").read_text()
    assert table.strip() in stdout  # printed as saved
    lines = {line.split(" | ")[3]: line for line in table.splitlines() if line.startswith("| comal_cycle")}
    mmd, sppo = lines["mmd"].split(" | "), lines["sppo"].split(" | ")
    assert mmd[:6] == ["| comal_cycle (3 responses)", "exact", str(STEPS), "mmd", "reg. gap ≤ 0.001", "1"]
    assert mmd[6] == f"**{runs['mmd']['last_steps']}**" and mmd[9] == runs["mmd"]["average_steps"]  # last: claimed
    assert sppo[6] == "— (0/1)" and sppo[9] == f"**{runs['sppo']['average_steps']}**"  # average: claimed
    with open(cmp / "benchmark.csv", newline="") as f:
        table_rows = {row["algo"]: row for row in csv.DictReader(f)}
    assert table_rows["mmd"]["last_reached"] == "1" and table_rows["sppo"]["last_reached"] == "0"
    assert float(table_rows["mmd"]["last_queries_mean"]) == float(runs["mmd"]["last_queries"])
    image = imread(cmp / "benchmark_queries.png")
    assert image.shape[0] > 300 and image.reshape(-1, image.shape[-1]).std(axis=0).max() > 0.01
    assert (cmp / "benchmark_queries.pdf").read_bytes()[:4] == b"%PDF"


def run(algo, seed, gap, steps=4, target=None, iterate="last"):
    """A run as compare loads it: ``gap`` logged at steps 0..steps-1, one second apart, 10 queries a step."""
    history = {"game/duality_gap": [(s, g, 1000 * s) for s, g in enumerate(gap)],
               "pref/queries": [(s, 10.0 * (s + 1), 1000 * s) for s in range(steps)]}
    tags = {"algo": algo, "game": "g", "seed": str(seed), "iterate": iterate, **({"target": target} if target else {})}
    return Run(name=f"{algo}-{seed}", run_id=f"{algo}{seed}", seed=str(seed), values=(algo,), task=("g", "sampled", "4", "3"),
               status="FINISHED", max_steps=steps, tags=tags, params={}, metrics={}, steps=history)


def test_a_mean_over_the_seeds_that_reached_says_how_many_did():
    """Two of three seeds reach ε (at steps 2 and 4: 20 and 40 queries), the third ends above it: the cell is
    their mean with the count; a run without a target tag takes its algorithm's; ε comes from the game's entry,
    else the default, and a missing one is named."""
    groups = {"mpo": [run("mpo", 0, [0.5, 0.01, 0.01, 0.01]), run("mpo", 1, [0.5, 0.5, 0.5, 0.01]),
                      run("mpo", 2, [0.5, 0.5, 0.5, 0.5])]}
    (row,), notes = rows(groups, {"default": {"ne": 0.03, "reg": 0.001}}, {"mpo": "NE"})
    assert notes == [] and row["last_reached"] == 2 and row["n"] == 3
    assert cell(row, "last", "steps") == "3 (2/3)" and cell(row, "last", "queries") == "30 (2/3)"
    assert "| g (3 responses) | sampled | 4 | mpo | NE gap ≤ 0.03 | 3 | 3 (2/3) |" in to_markdown([row])
    groups = {"mpo": [run("mpo", 0, [0.5, 0.01, 0.01, 0.01], target="NE"), run("mpo", 1, [0.7, 0.5, 0.5, 0.01], target="NE")]}
    (row,), _ = rows(groups, {"g": {"ne": 0.6, "reg": 1}}, {})
    assert cell(row, "last", "steps").startswith("**1.5 ± ")  # both reached: the interval; bold, the claimed iterate
    assert cell(row, "average", "steps") == "— (0/2)"  # these runs logged no average iterate
    _, notes = rows({"x": [run("x", 0, [0.1] * 4)]}, {"default": {"ne": 0.03}}, {})
    assert notes and "no `target` tag" in notes[0]
    with pytest.raises(SystemExit, match=r"benchmark.epsilon has no 'reg' for game 'g'"):
        epsilon_of({"default": {"ne": 0.03}}, "g", "regularized NE")


def test_every_benchmark_sweep_logs_into_the_benchmark_experiment():
    """The benchmark's sweeps are read by one compare call: one experiment, every algorithm (``glob(*)``, so an
    algorithm added later joins without an edit), and the command that makes the table in each header."""
    for path in sorted((REPO / "sweeps").glob("benchmark_*.yaml")):
        cfg = OmegaConf.load(path)
        assert cfg.logger.experiment_name == "sweep_benchmark", path.name
        assert cfg.hydra.sweeper.params.algo == "glob(*)", path.name
        assert "python -m lit_nash compare experiment=sweep_benchmark mode=benchmark" in path.read_text(), path.name
