"""docs/architecture.md's guide, followed as a newcomer would, outside the repository: a new algorithm is one
Python file, one YAML, one doc page and a test, in a package of your own; nothing of lit_nash is edited.

The toy algorithm is magnetic mirror descent toward the reference (the prox step, MMD's), written from the
guide: an exact step from ``lit_nash.games.dynamics``, a rollout through the ``Rollouts`` service and a loss
from ``lit_nash.algorithms.losses``. It must register itself, compose with ``fit`` through Hydra's search
path, converge in exact play to π*_τ's gap (0.0245 on the COMAL cycle at τ = 0.1), and train in sampled play.
"""

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from .cli import REPO, run_cli

TOY = '''
"""Toy: the prox step toward the reference (MMD), written from docs/architecture.md's guide."""

from lit_nash.algorithms import Algorithm
from lit_nash.algorithms.losses import policy_gradient
from lit_nash.games import dynamics as D


class Toy(Algorithm):
    name = "toy"

    def __init__(self, eta: float = 1.0, tau: float = 0.1, k: int = 2):
        super().__init__(eta, tau)
        self.k = self.count("k", k, 1, "policy samples per prompt")

    def exact_step(self, policy, win_rates):
        l = policy.log_probs()
        return D.prox(l, win_rates(l), self.eta, self.tau, policy.snapshot("ref"))

    def rollout(self, rollouts, prompt):
        return rollouts.play_against(prompt, self.k, "policy", ["ref"], "sum")

    def loss(self, rollout, logp):
        return policy_gradient(logp, rollout.p, [(self.tau, rollout.anchors["ref"])])
'''

YAML = """\
# Toy: the prox step toward the reference (a copy of MMD, to show what a new algorithm takes).
_target_: toy_nlhf.toy.Toy
eta: 1.0   # step size η
tau: 0.1   # KL coefficient τ toward the reference
k: 2       # policy samples per prompt
"""


def make_package(root: Path) -> list[Path]:
    files = {
        root / "toy_nlhf" / "__init__.py": "",
        root / "toy_nlhf" / "toy.py": TOY,
        root / "conf" / "algo" / "toy.yaml": YAML,
        root / "docs" / "toy.md": "# Toy\nThe prox step toward the reference; see docs/algorithms/mmd.md.\n",
        root / "tests" / "test_toy.py": "from toy_nlhf.toy import Toy\n\ndef test_name():\n    assert Toy().name == 'toy'\n",
    }
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return [p for p in files if p.name != "__init__.py"]


def git_status() -> str:
    return subprocess.run(["git", "status", "--porcelain", "lit_nash", "conf"], cwd=REPO, capture_output=True,
                          text=True).stdout


def test_a_new_algorithm_is_one_file_one_yaml_one_page_and_a_test(tmp_path):
    before = git_status()
    new = make_package(tmp_path)
    assert len(new) == 4  # toy.py, toy.yaml, toy.md, test_toy.py (and the package's empty __init__.py)
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    registered = subprocess.run(
        [sys.executable, "-c", "import toy_nlhf.toy; from lit_nash.algorithms import registry; "
                               "import json; print(json.dumps(sorted(registry())))"],
        capture_output=True, text=True, env={**os.environ, **env}, cwd=tmp_path)
    assert "toy" in json.loads(registered.stdout), registered.stderr[-2000:]
    search = f"hydra.searchpath=[file://{tmp_path / 'conf'}]"
    common = ["algo=toy", search, "trainer.enable_progress_bar=false"]
    exact = run_cli("fit", *common, "trainer.max_steps=300", cwd=tmp_path, env=env)
    assert exact.returncode == 0, exact.stderr[-3000:]
    gap = float(re.search(r"game/duality_gap=([0-9.e+-]+)", exact.stdout).group(1))
    assert abs(gap - 0.0245) < 1e-3  # π*_τ of the uniform reference, as MMD reaches it
    sampled = run_cli("fit", *common, "rollout=sampled", "trainer.max_steps=50", cwd=tmp_path, env=env)
    assert sampled.returncode == 0, sampled.stderr[-3000:]
    assert "toy on comal_cycle" in sampled.stdout
    assert git_status() == before  # nothing of lit_nash was edited
