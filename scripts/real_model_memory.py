"""Peak memory and step time of each algorithm with the real-model example's settings (issue 23).

    python scripts/real_model_memory.py --models real_models --algos mpo,comal,inpo --steps 2

Each algorithm runs ``python -m lit_nash fit`` in its own process with the settings of
docs/examples/real_model.md step 3 (SmolLM2-135M-Instruct with the default LoRA, bf16 weights, 48 new tokens,
``task=text``'s 8 prompts a step) and the algorithm's own defaults, against all-MiniLM-L6-v2 with a fresh 2-label
head: the memory and time of the example's trained judge, without training one first (its labels mean nothing
here, so this measures cost, not learning). Peak memory is the fit process's peak resident set (``os.wait4``:
the kernel's high-water mark, the figure the OOM killer acts on), in GB of 10⁹ bytes; the step times are the
"step N/M took" lines the progress bar writes to the run's ``fit.log``. One JSON line per algorithm on stdout; each run's folder,
log and terminal output stay under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STEP = re.compile(r"step (\d+)/\d+ took ([\d.]+) s")


def measure(algo: str, models: Path, prompts: Path, steps: int, out: Path, threads: int = 1) -> dict:
    """Run ``steps`` steps of ``algo`` with the example's settings; its peak RSS, step times and exit status."""
    folder = out / algo
    folder.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "lit_nash", "fit", f"algo={algo}", "task=text", "policy=causal_lm_lora",
            f"data.path={prompts.resolve()}", f"policy.model_path={(models / 'smollm2-135m-instruct').resolve()}",
            f"preference.path={(models / 'all-minilm-l6-v2').resolve()}", "+preference.allow_new_weights=true",
            "policy.dtype=bfloat16", "policy.max_new_tokens=48", f"trainer.max_steps={steps}",
            f"hydra.run.dir={folder}",
            f"logger.tracking_uri=sqlite:///{(out / 'mlruns.db').resolve()}"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with open(folder / "terminal.log", "w") as terminal:
        proc = subprocess.Popen(args, cwd=out, env=env, stdout=terminal, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    log = folder / "fit.log"
    times = {int(s): float(t) for s, t in STEP.findall(log.read_text())} if log.is_file() else {}
    return {"algo": algo, "returncode": os.waitstatus_to_exitcode(status), "steps": len(times),
            "peak_rss_gb": round(usage.ru_maxrss * 1024 / 1e9, 3),  # Linux reports KiB
            "step_s": [times[s] for s in sorted(times)], "log": str(folder / "terminal.log")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=Path(os.environ.get("LIT_NASH_REAL_MODELS", "real_models")),
                        help="the folder scripts/prepare_real_models.py wrote")
    parser.add_argument("--prompts", type=Path, default=REPO / "data" / "instructions.jsonl")
    parser.add_argument("--algos", default="mpo,comal,nash_mp,egpo,mnpo,inpo", help="comma-separated algorithm names")
    parser.add_argument("--steps", type=int, default=2, help="optimizer steps per algorithm")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each fit")
    parser.add_argument("--out", type=Path, default=Path("real_model_memory"))
    args = parser.parse_args()
    for name in ("smollm2-135m-instruct", "all-minilm-l6-v2"):
        if not (args.models / name).is_dir():
            raise SystemExit(f"real_model_memory: no {args.models / name}; build the models with "
                             f"python scripts/prepare_real_models.py {args.models}")
    args.out.mkdir(parents=True, exist_ok=True)
    for algo in args.algos.split(","):
        print(json.dumps(measure(algo, args.models, args.prompts, args.steps, args.out, args.threads)), flush=True)


if __name__ == "__main__":
    main()
