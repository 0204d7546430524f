"""The GPU check (scripts/gpu_check.py, run on a lent device by scripts/gpu_check.sh) runs its whole path at a
toy size on this CPU: models and prompts built in place, FSDP2 bf16-mixed steps through ``bench``, and a
summary with the update's MFU, generation tokens/s and peak memory."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_gpu_check_runs_at_a_toy_size_on_a_cpu(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_check.py"), "--tiny", "--steps", "3",
                           "--warmup", "1", "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["precision"] == "bf16-mixed" and summary["rows_per_step"] == 8
    assert 0 < summary["update_mfu_vs_bf16"] and summary["update_gflop_per_step"] > 0
    assert summary["generation_tokens_per_s"] > 0 and summary["peak_memory_gb"] > 0
    assert summary["parameters"] == 195904  # the toy Llama: 2 layers of width 64 over 504 tokens, untied head
    saved = json.loads((tmp_path / "gpu_check.json").read_text())
    assert saved["summary"] == summary and saved["bench"]["steps"] == 3
    config = (tmp_path / "bench" / ".hydra" / "config.yaml").read_text()  # the bench run's own record: FSDP2
    assert "_target_: lit_nash.sharding.ShardedDataParallel" in config and "precision: bf16-mixed" in config
