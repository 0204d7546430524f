#!/usr/bin/env bash
# The wheels the GPU device image lacks (its image has torch, lightning, transformers, peft, pyarrow, pandas, but
# not hydra-core, omegaconf, antlr4-python3-runtime or datasets with its pins), for CPython 3.12 on x86-64,
# into .whl/ (ignored by git), pinned to the versions CI tests. Run once from the repository root; about 52 MB,
# 50 of them pyarrow, which scripts/gpu_check.sh installs only when the image's is older than datasets needs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
mkdir -p .whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
  hydra-core==1.3.8 omegaconf==2.3.1 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 fsspec==2026.9.0 pyarrow==25.0.1
"$PY" -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3  # only an sdist on PyPI; pure Python
du -sh .whl
