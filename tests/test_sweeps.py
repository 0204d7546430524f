"""The sweeps of sweeps/ (the config group `sweep`): each composes with conf/fit.yaml, every job its
``hydra.sweeper.params`` lists composes and instantiates, each names its own MLflow experiment and documents
its command; and one real multirun of a sweep, narrowed, lands all its jobs in that experiment."""

import re
from pathlib import Path

import pytest
from hydra import initialize_config_module
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from lit_nash.algorithms import ALGORITHMS, Algorithm

from .cli import REPO, run_cli
from .test_configs import CONF, SWEEPS, build_fit, check_targets, compose_config


def sweeps() -> list[str]:
    """The sweeps: the YAML files at the top of sweeps/ (their sub-folders hold option groups they use)."""
    return sorted(p.stem for p in SWEEPS.glob("*.yaml"))


def jobs(cfg) -> list[list[str]]:
    """The overrides of every job of a sweep, as Hydra's basic sweeper expands hydra.sweeper.params (a
    ``glob(*)`` of a group's options is expanded by the config loader, as in a real multirun)."""
    params = [f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()]
    with initialize_config_module(config_module="lit_nash.conf", version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        overrides = OverridesParser.create(config_loader=loader).parse_overrides(params)
        return [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]


def header(name: str) -> str:
    """The comment block at the top of sweeps/<name>.yaml."""
    lines = (SWEEPS / f"{name}.yaml").read_text().splitlines()
    return "\n".join(line for line in lines[: next(i for i, l in enumerate(lines) if not l.startswith("#"))])


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlruns.db"


def test_there_are_sweeps_and_fit_lists_their_group():
    assert {"comal_cycle", "token_game", "egpo_nash_mp_grid", "mpo_magnet_period", "comal_reset_period"} <= set(sweeps())
    with initialize_config_module(config_module="lit_nash.conf", version_base="1.3"):  # what `fit --help` lists
        loader = GlobalHydra.instance().config_loader()
        assert set(sweeps()) <= set(loader.get_group_options("sweep"))


def test_every_config_folder_is_installed():
    """A plain install copies only the packages pyproject lists: every folder of conf/ and sweeps/ with YAML
    files is one (with an __init__.py). An editable install maps packages to folders but Hydra looks for the
    group under conf/, so conf/sweep links to sweeps/."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["package-dir"]["lit_nash.conf.sweep"] == "sweeps"
    folders = {("lit_nash.conf", p.parent.relative_to(CONF)) for p in CONF.rglob("*.yaml")}
    folders |= {("lit_nash.conf.sweep", p.parent.relative_to(SWEEPS)) for p in SWEEPS.rglob("*.yaml")}
    for root, rel in folders:
        package = ".".join([root, *rel.parts])
        assert package in setuptools["packages"], f"pyproject.toml does not install {package}"
        assert ((CONF if root == "lit_nash.conf" else SWEEPS) / rel / "__init__.py").exists(), f"{package}: no __init__.py"
    assert (CONF / "sweep").is_symlink() and (CONF / "sweep").resolve() == SWEEPS.resolve()


@pytest.mark.parametrize("name", sweeps())
def test_sweep_names_its_experiment_and_documents_its_commands(name):
    cfg = compose_config("fit", [f"sweep={name}"])
    assert cfg.hydra.runtime.choices["sweep"] == name
    experiment = cfg.logger.experiment_name
    assert experiment.startswith("sweep_"), f"sweeps/{name}.yaml: logger.experiment_name={experiment!r}"
    assert cfg.hydra.sweeper.params, f"sweeps/{name}.yaml sets no hydra.sweeper.params"
    text = header(name)
    assert (SWEEPS / f"{name}.yaml").read_text().startswith("# @package _global_\n")
    assert f"python -m lit_nash fit -m sweep={name}" in text
    assert f"python -m lit_nash compare experiment={experiment}" in text
    # the header's count of jobs is the sweep's; a sweep of every algorithm (glob(*)) counts its runs per
    # algorithm, so that an algorithm added later joins it without an edit
    runs = re.search(r"= (\d+) runs", text) or re.search(r"(\d+) runs per algorithm", text)
    per = len(ALGORITHMS) if runs and runs.group(0).endswith("per algorithm") else 1
    assert per == 1 or cfg.hydra.sweeper.params.algo == "glob(*)", f"sweeps/{name}.yaml: runs per algorithm without algo: glob(*)"
    assert runs and int(runs.group(1)) * per == len(jobs(cfg)), f"sweeps/{name}.yaml: header says {runs and runs.group(0)}"


@pytest.mark.parametrize("name", sweeps())
def test_every_job_of_a_sweep_composes_and_instantiates(name, tracking_uri):
    """Each job's overrides compose, take effect, and build the game, the algorithm and (tabular) the policy.
    Jobs that differ only in the seed are composed and built once (the first seed's)."""
    cfg = compose_config("fit", [f"sweep={name}"])
    built_once = set()
    for job in jobs(cfg):
        key = tuple(o for o in job if not o.startswith("seed="))
        if key in built_once:
            continue
        built_once.add(key)
        cfg = compose_config("fit", [f"sweep={name}", *job])
        choices = cfg.hydra.runtime.choices
        for override in job:
            key, value = override.split("=", 1)
            actual = choices[key] if key in choices else OmegaConf.select(cfg, key)
            assert str(actual) == value, f"sweep={name} {override}: got {actual!r}"
        assert cfg.logger.experiment_name.startswith("sweep_")
        check_targets(cfg)
        built = build_fit(cfg, tracking_uri)
        assert isinstance(built["algo"], Algorithm) and built["game"] is not None
        if cfg.policy._target_.endswith(".TabularPolicy"):
            assert "policy" in built


def test_every_option_under_sweeps_is_used_by_a_sweep():
    """A preset in a sub-folder of sweeps/ (if any) is some sweep's job, so the test above composes it; the
    comal_cycle and token_game sweeps run every algorithm."""
    used = set()
    for name in sweeps():
        for job in jobs(compose_config("fit", [f"sweep={name}"])):
            used |= {tuple(o.split("=", 1)) for o in job}
    options = {(f"sweep/{p.parent.relative_to(SWEEPS).as_posix()}", p.stem) for p in SWEEPS.glob("*/**/*.yaml")}
    assert options <= used, f"options no sweep runs: {sorted(options - used)}"
    assert {("algo", a) for a in ALGORITHMS} <= used  # comal_cycle, token_game


def test_a_narrowed_sweep_runs_every_job_into_its_experiment(tmp_path: Path):
    """The CLI: `fit -m sweep=mpo_magnet_period` with its swept key narrowed on the command line (it replaces
    the sweep's list) and a short horizon: one MLflow run per job, all in the sweep's experiment."""
    out = run_cli("fit", "-m", "sweep=mpo_magnet_period", "algo.magnet_every=10,30", "trainer.max_steps=30", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("lit_nash fit: mpo on comal_cycle") == 2
    assert len(list((tmp_path / "multirun" / "sweep_reset_period").glob("mpo_*/[0-9]"))) == 2  # hydra.sweep.dir

    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns.db")
    experiment = client.get_experiment_by_name("sweep_reset_period")
    runs = client.search_runs([experiment.experiment_id], "tags.algo != ''")  # the jobs, not the sweep's own run
    assert sorted(r.data.params["algo.magnet_every"] for r in runs) == ["10", "30"]
    assert all(r.info.status == "FINISHED" and r.data.tags["algo"] == "mpo" for r in runs)
    assert [e.name for e in client.search_experiments() if e.name.startswith("lit_nash")] == []


def test_a_sweep_ends_with_one_line_per_job_and_the_best(tmp_path: Path):
    """``fit -m`` of 2 jobs through the CLI (issue 17): after the jobs, the terminal gets the line naming the
    sweep's MLflow run (lit_nash/sweep_run.py), the sweep's folder, one line per job (its number, the override
    that sets it apart, its final duality gap as MLflow has it) and the best setting, one seed here (issue 26:
    its count, no interval); the terminal has no line twice and nothing but the launcher's, the runs' and these."""
    from mlflow import MlflowClient

    out = run_cli("fit", "-m", "algo=mpo,comal", "trainer.max_steps=20", "trainer.enable_progress_bar=false", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    terminal = [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]
    assert len(terminal) == len(set(terminal)), terminal
    (sweep,) = (tmp_path / "multirun").glob("*/*")
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}")
    runs = client.search_runs([client.get_experiment_by_name("lit_nash").experiment_id], "tags.algo != ''")
    gap = {r.data.tags["algo"]: r.data.metrics["game/duality_gap"] for r in runs}
    best = min(gap, key=gap.get)
    (parent,) = client.search_runs([client.get_experiment_by_name("lit_nash").experiment_id], "tags.command = 'sweep'")
    assert terminal[-5:] == [
        f"lit_nash sweep: MLflow run {parent.info.run_id} (lit_nash) holds the comparison of its jobs: table, ranking "
        f"and curves, also in {sweep / 'compare'}",
        f"lit_nash sweep: 2 jobs in {sweep}",
        f"  job 0  algo=mpo: game/duality_gap={gap['mpo']:.3g}",
        f"  job 1  algo=comal: game/duality_gap={gap['comal']:.3g}",
        f"  best: algo={best} (game/duality_gap={gap[best]:.3g}, 1 seed; the lowest mean of 2 settings)",
    ], terminal
    # the rest: Hydra's launch line, each job's "#k : overrides" line and its summary line
    assert len(terminal) == 5 + 1 + 2 * 2, terminal
    assert sum("[HYDRA] \t#" in line for line in terminal) == 2
    assert sum(line.startswith("lit_nash fit: ") for line in terminal) == 2


def test_the_sweep_summary_ranks_settings_by_their_mean_over_seeds(tmp_path: Path):
    """Issue 26: "best: job 5" was the luckiest seed. Settings (a job's overrides but its seed) are ranked by
    the mean over their seeds with its 95% interval, read from the jobs' folders."""
    from lit_nash.sweep_summary import summary_lines

    gaps = {("mpo", 0): 0.010, ("mpo", 1): 0.012, ("mpo", 2): 0.014, ("egpo", 0): 0.005, ("egpo", 1): 0.033, ("egpo", 2): 0.005}
    for num, ((algo, seed), gap) in enumerate(gaps.items()):
        job = tmp_path / str(num)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(f"- algo={algo}\n- seed={seed}\n")
        (job / "fit.log").write_text(f"[x][lit_nash.fit][INFO] - lit_nash fit: {algo} on g (seed {seed}), 9 steps | "
                                     f"game/duality_gap={gap} | MLflow run x\n")
    lines = summary_lines(tmp_path)
    assert lines[-4:] == [
        "  ranked by the mean of game/duality_gap over seeds (± the 95% half-width):",
        "    1. algo=mpo: 0.012 ± 0.005 (3 seeds)",
        "    2. algo=egpo: 0.0143 ± 0.04 (3 seeds)  (interval overlaps the best)",
        "  best: algo=mpo (game/duality_gap 0.012 ± 0.005 over 3 seeds; the lowest mean of 2 settings)",
    ], lines
