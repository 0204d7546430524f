#!/usr/bin/env bash
# The GPU check (scripts/gpu_check.py) as one device command, run from the repository root:
#   here, once:        bash scripts/gpu_check_wheels.sh     (the wheels the device image lacks, into .whl/, ignored)
#   on the device:     command "bash scripts/gpu_check.sh", carry [".whl"], timeout_s 600
# It installs the carried wheels and lit_nash itself (with its configs) into a folder on PYTHONPATH, checks they
# import, and runs the check; its summary is the last line, and $OUT/gpu_check.json holds the whole bench result.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
site=${SITE:-/tmp/lit_nash_site}
wheels=(.whl/*.whl)
if "$PY" -c 'import sys, pyarrow; sys.exit(int(pyarrow.__version__.split(".")[0]) < 24)' 2>/dev/null; then
  wheels=($(ls .whl/*.whl | grep -v '/pyarrow-'))  # the image's pyarrow is new enough for datasets 5
fi
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --no-build-isolation --upgrade \
  --target "$site" "${wheels[@]}" .
export PYTHONPATH="$site" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
"$PY" -c 'import hydra, omegaconf, datasets, lit_nash.conf, lit_nash.bench' || { echo "gpu_check.sh: an import failed (above)" >&2; exit 3; }
exec "$PY" scripts/gpu_check.py "$@"  # lit_nash from $site (scripts/ is sys.path[0], not the checkout)
