"""CI does what the README tells a new user: the README's install lines and test command, verbatim."""

import re

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
