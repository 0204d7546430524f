"""Every file of a checkpoint checked before a resume touches anything: the MLflow run, the model, the folder.

A checkpoint file (``torch.save``) is a zip archive: its directory sits at its end and every member carries a
CRC-32, so reading each member once (``zipfile``'s ``testzip``) finds a truncated file and a damaged byte,
which ``torch.load`` would load without a word. A sharded checkpoint (``trainer=fsdp``) is a folder:
``meta.pt`` (a checkpoint file: the run config, the step, what is not sharded), the shards' index
``.metadata``, and one shard file per rank (``__<rank>_0.distcp``). The index names the byte range of every
tensor in its shard file, so a missing or shortened shard is found from the files' sizes, without reading
the tensors. The index is a pickle (``torch.distributed.checkpoint`` writes it so); it is read with an
unpickler that admits only the index's own classes, so no other code in it can run.

A problem is reported as one line naming the file (``problem``); ``fit`` then stops before it builds
anything, and the run the checkpoint belongs to keeps its MLflow status.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

META = "meta.pt"  # a sharded folder's non-sharded part, written by rank 0 (Lightning's _METADATA_FILENAME)
INDEX = ".metadata"  # the shards' index (torch.distributed.checkpoint's)


def looks_sharded(path: Path) -> bool:
    """A folder holding the parts of a sharded checkpoint (its index or a shard), with or without ``meta.pt``."""
    return path.is_dir() and ((path / INDEX).is_file() or (path / META).is_file() or any(path.glob("*.distcp")))


def _zip_problem(file: Path) -> str | None:
    try:
        with zipfile.ZipFile(file) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        return f"the file {str(file)!r} is truncated or damaged ({type(e).__name__}: {e})"
    if bad is not None:
        return f"the file {str(file)!r} is damaged: its part {bad!r} does not match its checksum"
    return None


class _IndexUnpickler(pickle.Unpickler):
    """The classes a ``.metadata`` index holds, and nothing else."""

    def find_class(self, module: str, name: str):
        import torch

        allowed = (module.startswith("torch.distributed.checkpoint.") and module.rsplit(".", 1)[-1] in
                   ("metadata", "filesystem", "planner", "_extension")) or \
                  (module == "pathlib" and name in ("Path", "PosixPath", "WindowsPath", "PurePosixPath")) or \
                  (module == "torch" and (name == "Size" or isinstance(getattr(torch, name, None), (torch.dtype, torch.layout, torch.memory_format)))) or \
                  (module == "torch.serialization" and name == "_get_layout") or \
                  (module == "collections" and name == "OrderedDict")
        if not allowed:
            raise pickle.UnpicklingError(f"the index names {module}.{name}, which is not part of a checkpoint index")
        return super().find_class(module, name)


def _sharded_problem(folder: Path) -> str | None:
    if not (folder / META).is_file():
        return (f"the sharded checkpoint folder {str(folder)!r} has no {META} (the part rank 0 writes: the run config, "
                "the step, what is not sharded); it was copied or moved incompletely")
    if problem := _zip_problem(folder / META):
        return problem
    index = folder / INDEX
    if not index.is_file():
        return f"the sharded checkpoint folder {str(folder)!r} has no shard index {INDEX!r}"
    try:
        with open(index, "rb") as f:
            metadata = _IndexUnpickler(f).load()
        storage = dict(metadata.storage_data)
    except Exception as e:
        return f"the shard index {str(index)!r} is damaged or not an index ({type(e).__name__}: {e})"
    needed: dict[str, int] = {}  # shard file -> the bytes its tensors span
    for info in storage.values():
        name = str(info.relative_path)
        needed[name] = max(needed.get(name, 0), int(info.offset) + int(info.length))
    for name, size in sorted(needed.items()):
        shard = folder / name
        if not shard.is_file():
            return f"the shard {str(shard)!r} is missing ({len(needed)} shard file(s) make this checkpoint)"
        if shard.stat().st_size < size:
            return f"the shard {str(shard)!r} is truncated ({shard.stat().st_size} bytes; its tensors need {size})"
    return None


def problem(path: Path) -> str | None:
    """What makes the checkpoint at ``path`` (a file, or a sharded folder) unreadable, naming the file; None if
    every file is whole. A file that is not a zip archive at all (another format) is left to the loader, which
    says what it is."""
    path = Path(path)
    if looks_sharded(path):
        return _sharded_problem(path)
    if not path.is_file():
        return f"{str(path)!r} does not exist"
    with open(path, "rb") as f:
        head = f.read(4)
    if head != b"PK\x03\x04":  # not a zip archive: a legacy torch file, a pickle, text; load_checkpoint names it
        return None
    return _zip_problem(path)


def check_resumable(path: Path, resume: str, command: str = "fit") -> None:
    """Exit with one line if any file of the checkpoint ``resume=`` named is missing, truncated or damaged."""
    if (found := problem(Path(path))) is not None:
        raise SystemExit(f"lit_nash {command}: resume={resume}: cannot resume: {found}. Nothing was touched: the run's "
                         "MLflow record keeps its status; put the complete checkpoint back (from a copy), or start the "
                         "run anew")
