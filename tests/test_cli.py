"""The command line: dispatch, help, errors that name the valid choices, and a plain install."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .cli import REPO, run_cli

ALGOS = sorted(p.stem for p in (REPO / "conf" / "algo").glob("*.yaml"))
GAMES = sorted(p.stem for p in (REPO / "conf" / "game").glob("*.yaml"))


def test_unknown_command_lists_the_commands_and_exits_2(tmp_path):
    out = run_cli("fitt", cwd=tmp_path)
    assert out.returncode == 2
    assert "unknown command 'fitt'" in out.stderr
    assert "fit" in out.stderr.split("commands:")[1]


def test_no_command_prints_usage_and_exits_2(tmp_path):
    out = run_cli(cwd=tmp_path)
    assert out.returncode == 2
    assert "usage: python -m lit_nash <command>" in out.stderr


@pytest.mark.parametrize(
    "args",
    [["fit", "algo=egpo", "--cfg", "job"], ["fit", "--cfg", "job", "algo=egpo"], ["fit", "algo=egpo", "--help"]],
)
def test_hydra_flags_work_before_or_after_the_overrides(tmp_path, args):
    out = run_cli(*args, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "lit_nash.algorithms.egpo.EGPO" in out.stdout


def test_help_lists_the_commands(tmp_path):
    out = run_cli("--help", cwd=tmp_path)
    assert out.returncode == 0
    assert "fit" in out.stdout.split("commands:")[1]


def test_fit_help_shows_every_config_group_and_choice(tmp_path):
    out = run_cli("fit", "--help", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert f"algo: {', '.join(ALGOS)}" in out.stdout
    assert f"game: {', '.join(GAMES)}" in out.stdout
    for group in ("policy", "preference", "data", "trainer", "logger"):
        assert f"\n{group}: " in out.stdout


def test_version_prints_the_package_version(tmp_path):
    import lit_nash

    out = run_cli("--version", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"lit_nash {lit_nash.__version__}\n"
    assert f'version = "{lit_nash.__version__}"' in (REPO / "pyproject.toml").read_text()


def test_bench_help_is_benchs_own(tmp_path):
    """bench's config extends fit's: its --help has bench's header and footer, with fit's groups and keys."""
    out = run_cli("bench", "--help", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("lit_nash bench: time online steps") and "usage: python -m lit_nash bench" in out.stdout
    assert "lit_nash fit" not in out.stdout and "python -m lit_nash fit" not in out.stdout
    assert f"algo: {', '.join(ALGOS)}" in out.stdout and "\nbench:\n" in out.stdout


@pytest.mark.parametrize("group,choices", [("algo", ALGOS), ("game", GAMES)])
def test_unknown_choice_names_the_valid_choices(tmp_path, group, choices):
    out = run_cli("fit", f"{group}=nope", cwd=tmp_path)
    assert out.returncode == 1
    assert f"Could not find '{group}/nope'" in out.stderr
    listed = out.stderr.split(f"Available options in '{group}':")[1].split()[: len(choices)]
    assert listed == choices


@pytest.mark.parametrize(
    "overrides,message",  # the table of bad inputs is tests/test_bad_inputs.py; these two are not in it
    [
        (["algo=comal", "algo.inner=sgd"], "inner must be one of ['omd', 'prox']"),
        (["game=matrix", "game.P=[[0.5,0.5,0.5],[0.5,0.5,0.5]]"], "must be square, got shape (2, 3)"),
    ],
)
def test_bad_input_fails_before_training_with_a_clear_message(tmp_path, overrides, message):
    out = run_cli("fit", *overrides, cwd=tmp_path, env={"HYDRA_FULL_ERROR": "0"})
    assert out.returncode != 0
    assert message in out.stderr, out.stderr[-2000:]
    assert not (tmp_path / "mlruns.db").exists(), "a bad config must not create an MLflow run"


def test_fit_help_works_after_a_plain_non_editable_install(tmp_path):
    """conf/ installs as the package lit_nash.conf, so Hydra finds the configs outside the repository."""
    source, target = tmp_path / "source", tmp_path / "site"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".*", "build", "*.egg-info", "outputs", "mlruns*"))
    subprocess.run(  # from a copy: building writes build/ into the source tree
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(source)],
        check=True, capture_output=True, timeout=300,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"PYTHONPATH": str(target)}
    where = subprocess.run(
        [sys.executable, "-c", "import lit_nash; print(lit_nash.__file__)"],
        cwd=elsewhere, env={**__import__("os").environ, **env}, capture_output=True, text=True, check=True,
    )
    assert Path(where.stdout.strip()).is_relative_to(target), "the test must run the installed copy"
    out = run_cli("fit", "--help", cwd=elsewhere, env=env)
    assert out.returncode == 0, out.stderr
    for group in sorted(p.name for p in (REPO / "conf").iterdir() if p.is_dir() and p.name != "__pycache__"):
        choices = sorted(c.stem for c in (REPO / "conf" / group).glob("*.yaml"))
        assert f"{group}: {', '.join(choices)}" in out.stdout, f"group {group} missing from the installed package"


def test_run_folders_of_a_failed_sweep_and_no_command_override(tmp_path):
    """A sweep whose first job fails while training and whose second is refused at validation: the first
    keeps its folder (log, config) marked by a FAILED file with the error; the second leaves no folder. The
    launcher's lines and Hydra's saved overrides are the user's own: the CLI adds no `command=fit`."""
    out = run_cli("fit", "-m", "trainer.max_steps=30,0", "trainer.enable_progress_bar=false",
                  "+callbacks.fault._target_=tests.faults.PoisonAt", "+callbacks.fault.step=20",
                  "hydra.sweep.dir=sweep", cwd=tmp_path, env={"PYTHONPATH": str(REPO)})
    assert out.returncode != 0
    jobs = [l for l in out.stdout.splitlines() if "[HYDRA] \t#" in l]
    assert [l.split("#", 1)[1] for l in jobs] == [
        f"{i} : trainer.max_steps={n} trainer.enable_progress_bar=False +callbacks.fault._target_=tests.faults.PoisonAt "
        "+callbacks.fault.step=20" for i, n in ((0, 30), (1, 0))]
    assert "command=" not in out.stdout + out.stderr
    assert "trainer.max_steps must be an integer >= 1" in out.stderr
    # the job folder, Hydra's multirun.yaml and the id of the sweep's MLflow run (lit_nash/sweep_run.py); no job
    # completed, so there is no comparison
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir()) == ["0", "mlflow_parent_run.json", "multirun.yaml"]
    failed = tmp_path / "sweep" / "0"
    assert (failed / "FAILED").read_text().startswith("this run failed: NumericalError: algo=mpo, optimizer step 20")
    assert (failed / "fit.log").is_file() and "command" not in (failed / ".hydra" / "overrides.yaml").read_text()


def test_the_unknown_key_message_lists_the_keys_a_user_sets(tmp_path):
    """Not the internal `command` key, and the group `task_policy` by its name (not `optional task_policy`)."""
    out = run_cli("fit", "+algos=egpo", cwd=tmp_path)
    assert out.returncode != 0
    keys = out.stderr.split("fit's keys and groups are ", 1)[1].split(";", 1)[0].split(", ")
    assert "command" not in keys and "task_policy" in keys and not any(" " in k for k in keys)
    assert keys[:3] == ["algo", "callbacks", "checkpoint"]


def test_a_run_refused_at_validation_leaves_no_run_folder(tmp_path):
    out = run_cli("fit", "trainer.max_steps=0", cwd=tmp_path)
    assert out.returncode != 0 and "trainer.max_steps must be an integer >= 1" in out.stderr
    assert list(tmp_path.iterdir()) == [], "no outputs/<date>/<time> folder, no store"
