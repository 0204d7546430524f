"""Test settings of ENVIRONMENT.md: one torch thread (two threads on a busy 2-core box ran 50x slower)
and no model hub. Set before torch is imported; subprocesses inherit them through os.environ."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[key] = "1"

import torch  # noqa: E402

torch.set_num_threads(1)
