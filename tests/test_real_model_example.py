"""The real-model example end to end (scripts/real_model_example.py, docs/examples/real_model.md), with the real
pretrained models of ../shared/real_models/prepare.sh: SmolLM2's own samples labelled by the stated rule (the
shorter response wins) train the MiniLM classifier, SmolLM2 with LoRA trains against it through `fit`, and
`eval` judges the trained policy against the reference with the same classifier.

What is asked, and why (measured 2026-12-01, seed 0; docs/results.md has the documented run of three
algorithms): the classifier's held-out accuracy on the rule was 0.83 (it must reach 0.7: well above chance,
with room for a different box's rounding); online IPO's win rate against the reference after 40 steps (the
documented run's settings) must exceed ½ by more than its 95% half-width, the issue's criterion (this test
measured 0.597 ± 0.031 in 17.5 minutes on 2 cores).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REAL_MODELS = Path(os.environ.get("LIT_NASH_REAL_MODELS", REPO.parent / "real_models"))
INSTRUCTIONS = REPO.parent / "shared" / "real_models" / "instructions.jsonl"


@pytest.mark.slow
@pytest.mark.skipif(not (REAL_MODELS / "smollm2-135m-instruct").is_dir() or not INSTRUCTIONS.is_file(),
                    reason=f"no real models in {REAL_MODELS}: bash ../shared/real_models/prepare.sh {REAL_MODELS}")
def test_the_real_model_example_raises_the_win_rate_against_the_reference_beyond_its_interval(tmp_path):
    out = tmp_path / "example"
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "real_model_example.py"), "--models", str(REAL_MODELS),
                           "--prompts", str(INSTRUCTIONS), "--out", str(out), "--algos", "online_ipo", "--steps", "40"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["pairs"]["pairs"] == 60 * 6  # every pair of 4 responses to each of the 60 prompts
    assert results["judge"]["eval/accuracy"] >= 0.7
    r = results["eval"]
    (i,) = [i for i, name in enumerate(r["policies"]) if "online_ipo" in name]
    assert r["win_rate_vs_ref"][i] - r["win_rate_vs_ref_ci95"][i] > 0.5, (r["win_rate_vs_ref"], r["win_rate_vs_ref_ci95"])
