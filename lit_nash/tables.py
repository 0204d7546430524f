"""Tables from files, folders or the hub, through ``datasets``: the one loader behind prompt datasets
(``data=prompts``) and preference pairs (``train_preference``).

Only ``datasets`` is imported, so a bad file is reported in a second, before torch and Lightning load.
"""

from __future__ import annotations

from pathlib import Path

FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
TEXT_SUFFIXES = (".jsonl", ".json", ".csv")  # read as UTF-8 text (datasets fails on other bytes mid-load)


def check_local_file(path: str, key: str = "data.path") -> None:
    """A local file must be readable, and a text one (.jsonl, .json, .csv) UTF-8: otherwise one error that
    names the key, the file, where it went wrong and the fix. Other paths (a folder, a hub name) pass."""
    local, where = Path(str(path)).expanduser(), f"{key}={str(path)!r}"
    if not local.is_file():
        return
    try:
        f = open(local, "rb")
    except PermissionError:
        raise PermissionError(f"{where}: permission denied, the file cannot be read; fix its permissions "
                              f"(chmod u+r {str(local)!r}) or run as a user who may read it") from None
    if local.suffix.lower() not in TEXT_SUFFIXES:
        f.close()
        return
    import codecs

    decoder, line, column = codecs.getincrementaldecoder("utf-8")(), 1, 0  # where the next chunk starts
    with f:
        while chunk := f.read(1 << 20):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as e:
                head = e.object[:e.start]  # the chunk's bytes before the bad one (after any held back before)
                nl = head.rfind(b"\n")
                line, column = line + head.count(b"\n"), (len(head) - nl if nl >= 0 else column + len(head) + 1)
                raise ValueError(
                    f"{where}: line {line} is not UTF-8 (byte 0x{e.object[e.start]:02x} at column {column}: {e.reason}); "
                    f"save the file as UTF-8, e.g. iconv -f latin1 -t utf-8 {local.name} > {local.stem}.utf8{local.suffix}"
                ) from None
            nl = chunk.rfind(b"\n")
            line, column = line + chunk.count(b"\n"), (len(chunk) - nl - 1 if nl >= 0 else column + len(chunk))
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise ValueError(f"{where}: the file ends inside a UTF-8 character (truncated?); save it as UTF-8") from None


def load_table(path: str, split: str = "train", subset: str | None = None, cache_dir: str | None = None,
               key: str = "data.path"):
    """A ``datasets.Dataset`` from a local .jsonl/.json/.parquet/.csv file (its own "train" split), a
    ``save_to_disk`` folder (``split`` of a DatasetDict), or a hub name / data folder (``split``, ``subset``).

    Errors name the config ``key`` and the path: a missing or unreadable file, an unknown suffix, a text file
    that is not UTF-8, an empty file or table, and datasets' own errors (malformed rows, an unknown split, an
    unreachable hub).
    """
    import datasets

    local, where = Path(str(path)).expanduser(), f"{key}={str(path)!r}"
    suffix = local.suffix.lower()
    if local.is_file() and suffix not in FILE_BUILDERS:
        raise ValueError(f"{where}: unknown file type {suffix!r}; use one of {sorted(FILE_BUILDERS)}")
    if not local.exists() and (suffix in FILE_BUILDERS or local.is_absolute() or str(path).startswith(".")):
        raise FileNotFoundError(f"{where}: no such file or directory")
    check_local_file(path, key)
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
