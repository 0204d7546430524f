"""The README is a script a newcomer runs: CI runs its install lines and test command verbatim, and every
`python -m lit_nash` command in it runs here."""

import re

import pytest

from .cli import REPO


def bash_blocks(text: str) -> list[list[str]]:
    return [block.strip().splitlines() for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def section(text: str, title: str) -> str:
    return text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_ci_runs_the_readme_install_and_test_commands():
    readme = (REPO / "README.md").read_text()
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    (install,) = bash_blocks(section(readme, "Install"))
    run, test = bash_blocks(section(readme, "The two commands"))
    assert run == ["python -m lit_nash fit"]
    assert test == ["pytest"]
    commands = [line for line in ci if line and not line.startswith("#")]
    position = [commands.index(line) for line in install + test]  # ValueError names a missing line
    assert position == sorted(position), "CI must run the install lines, then the test command, in order"


# -- every command of the README runs as written ------------------------------------------------------
# Lines that are not lit_nash commands are left to others: the install lines and `pytest` are CI's own
# run (above), and `mlflow ui` starts a server. Placeholders (<...>) get the test's tiny models. In the
# default run a sweep is narrowed to 2 algorithms × 2 seeds and a text run to 2 steps, so the sequence
# fits CI; `pytest -m slow` runs every command exactly as written.
PLACEHOLDERS = {"<causal LM dir or hub name>": "policy", "<pairwise model dir>": "pairwise"}
NARROW = {
    "sweep=": ["algo=mpo,egpo", "seed=0,1", "trainer.max_steps=300"],  # replace the sweep's lists
    "task=text": ["trainer.max_steps=2", "policy.max_new_tokens=6"],
}


def readme_commands() -> list[str]:
    """Every `python -m lit_nash` command in the README's bash blocks, in order, continuations joined."""
    text = (REPO / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = " ".join(line.split(" #", 1)[0].split())  # a trailing comment is not part of the command
            if line.startswith("python -m lit_nash"):
                commands.append(line)
    return commands


def run_readme(tmp_path, text_models, narrow: bool) -> None:
    import shlex
    import shutil
    import subprocess
    import sys

    shutil.copy(text_models["plain"], tmp_path / "prompts.jsonl")
    for line in readme_commands():
        for placeholder, key in PLACEHOLDERS.items():
            line = line.replace(placeholder, text_models[key])
        assert "<" not in line, f"README command with an unknown placeholder: {line}"
        args = shlex.split(line)
        args[0] = sys.executable
        if narrow:
            args += [extra for key, extras in NARROW.items() if any(key in a for a in args) for extra in extras]
        done = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=3600)
        assert done.returncode == 0, f"{line}\n{done.stderr[-3000:]}"


def test_the_readme_lists_the_commands_a_newcomer_needs():
    commands = readme_commands()
    for needed in ("python -m lit_nash fit", "python -m lit_nash fit -m sweep=comal_cycle",
                   "python -m lit_nash compare experiment=sweep_comal_cycle", "python -m lit_nash eval experiment=sweep_comal_cycle"):
        assert any(c.startswith(needed) for c in commands), needed


def test_every_readme_command_runs(tmp_path, text_models):
    run_readme(tmp_path, text_models, narrow=True)
    assert (tmp_path / "compare_comal_cycle" / "table.md").read_text().count("\n") >= 3  # header, rule, 2 algorithms
    assert (tmp_path / "eval_comal_cycle" / "win_rate_matrix.png").stat().st_size > 1000


@pytest.mark.slow
def test_every_readme_command_runs_as_written(tmp_path, text_models):
    run_readme(tmp_path, text_models, narrow=False)
