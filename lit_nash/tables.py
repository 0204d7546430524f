"""Tables from files, folders or the hub, through ``datasets``: the one loader behind prompt datasets
(``data=prompts``) and preference pairs (``train_preference``).

Only ``datasets`` is imported, so a bad file is reported in a second, before torch and Lightning load.
"""

from __future__ import annotations

from pathlib import Path

FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


def load_table(path: str, split: str = "train", subset: str | None = None, cache_dir: str | None = None,
               key: str = "data.path"):
    """A ``datasets.Dataset`` from a local .jsonl/.json/.parquet/.csv file (its own "train" split), a
    ``save_to_disk`` folder (``split`` of a DatasetDict), or a hub name / data folder (``split``, ``subset``).

    Errors name the config ``key`` and the path: a missing file, an unknown suffix, an empty file or table,
    and datasets' own errors (malformed rows, an unknown split, an unreachable hub).
    """
    import datasets

    local, where = Path(str(path)).expanduser(), f"{key}={str(path)!r}"
    suffix = local.suffix.lower()
    if local.is_file() and suffix not in FILE_BUILDERS:
        raise ValueError(f"{where}: unknown file type {suffix!r}; use one of {sorted(FILE_BUILDERS)}")
    if not local.exists() and (suffix in FILE_BUILDERS or local.is_absolute() or str(path).startswith(".")):
        raise FileNotFoundError(f"{where}: no such file or directory")
    if local.is_file() and not local.read_bytes()[:4096].strip():
        raise ValueError(f"{where}: the file is empty")
    try:
        if local.is_file():
            table = datasets.load_dataset(FILE_BUILDERS[suffix], data_files=str(local), split="train", cache_dir=cache_dir)
        elif (local / "dataset_info.json").exists() or (local / "dataset_dict.json").exists():
            table = datasets.load_from_disk(str(local))
            table = table[split] if isinstance(table, datasets.DatasetDict) else table
        else:  # a hub name, or a folder of data files
            table = datasets.load_dataset(str(path), subset, split=split, cache_dir=cache_dir)
    except Exception as e:  # datasets' errors do not say which file or key
        raise ValueError(f"{where}: could not load it ({type(e).__name__}: {e})") from e
    if len(table) == 0:
        raise ValueError(f"{where}: the dataset is empty")
    return table
