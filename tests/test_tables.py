"""The one table loader (``lit_nash.tables.load_table``): every kind of source, and errors that name the key."""

import json

import pytest

from lit_nash.tables import load_table


def test_jsonl_csv_parquet_and_a_saved_dataset(tmp_path):
    import datasets

    rows = [{"prompt": "a", "n": 1}, {"prompt": "b", "n": 2}]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "t.csv").write_text("prompt,n\na,1\nb,2\n")
    table = datasets.Dataset.from_list(rows)
    table.to_parquet(str(tmp_path / "t.parquet"))
    table.save_to_disk(str(tmp_path / "saved"))
    for source in ("t.jsonl", "t.csv", "t.parquet", "saved"):
        loaded = load_table(str(tmp_path / source), cache_dir=str(tmp_path / "cache"))
        assert loaded["prompt"] == ["a", "b"], source


@pytest.mark.parametrize("make,message", [
    (lambda d: d / "missing.jsonl", "no such file or directory"),
    (lambda d: (d / "empty.jsonl").write_text("") and d / "empty.jsonl" or d / "empty.jsonl", "the file is empty"),
    (lambda d: (d / "x.txt").write_text("hi") and d / "x.txt" or d / "x.txt", "unknown file type '.txt'"),
    (lambda d: (d / "bad.jsonl").write_text("{not json\n") and d / "bad.jsonl" or d / "bad.jsonl", "could not load it"),
])
def test_errors_name_the_key_and_the_path(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises((ValueError, FileNotFoundError), match=message) as error:
        load_table(str(path), key="data.path", cache_dir=str(tmp_path / "cache"))
    assert "data.path=" in str(error.value) and path.name in str(error.value)
