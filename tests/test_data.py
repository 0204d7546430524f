"""Prompt datasets through ``datasets``: every local format, prompt strings and conversations, a
configurable column, and a clear error for a missing, empty or malformed dataset."""

import json

import pytest

from lit_nash.data import load_prompts
from lit_nash.engine import prompt_dataset
from lit_nash.rollout import Rollouts

CHAT = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "name a colour"},
        {"role": "assistant", "content": "red"}]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_every_local_format_loads_the_same_prompts(tmp_path):
    import datasets

    rows = [{"text": "say hello", "id": 1}, {"text": "count to three", "id": 2}]
    table = datasets.Dataset.from_list(rows)
    write_jsonl(tmp_path / "p.jsonl", rows)
    table.to_parquet(str(tmp_path / "p.parquet"))
    table.to_csv(str(tmp_path / "p.csv"), index=False)
    table.save_to_disk(str(tmp_path / "saved"))
    for name in ("p.jsonl", "p.parquet", "p.csv", "saved"):
        assert load_prompts(str(tmp_path / name), column="text") == ["say hello", "count to three"], name


def test_conversations_keep_their_turns_without_the_trailing_answer(tmp_path):
    path = write_jsonl(tmp_path / "chat.jsonl", [{"messages": CHAT}, {"messages": CHAT[1:2]}])
    prompts = load_prompts(str(path), column="messages", max_prompts=5)
    assert prompts == [CHAT[:2], CHAT[1:2]]


def test_the_datamodule_streams_indices_into_its_prompts(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"question {i}"} for i in range(10)])
    data = prompt_dataset(str(path), max_prompts=6, prompts_per_step=4, seed=3)
    assert data.num_prompts == 6 and data.prompts[0] == "question 0"
    data.attach(None, rollouts=Rollouts(None, None, None))  # sampled play: prompts_per_step applies (exact play takes all)
    batches = iter(data.train_dataloader())
    first = next(batches)["prompt"]
    assert first.shape == (4,) and first.max() < 6 and len(set(first.tolist())) == 4


@pytest.mark.parametrize(
    "rows, kwargs, message",
    [
        (None, {}, "no such file or directory"),
        ([], {}, "is empty"),
        ([{"question": "hi"}], {}, r"no column 'prompt'; columns are \['question'\] \(set data.column\)"),
        ([{"prompt": "hi"}, {"prompt": "  "}], {}, "row 1 of column 'prompt' is an empty prompt"),
        ([{"prompt": [{"speaker": "user", "text": "hi"}]}], {}, "row 0 of column 'prompt' is neither a prompt string nor a conversation"),
        ([{"prompt": [{"role": "assistant", "content": "hi"}]}], {}, "is neither a prompt string nor a conversation"),
        ([{"prompt": "hi"}], {"max_prompts": 0}, "data.max_prompts must be >= 1"),
    ],
)
def test_bad_datasets_fail_with_a_message_naming_the_problem(tmp_path, rows, kwargs, message):
    path = tmp_path / "prompts.jsonl"
    if rows is not None:
        write_jsonl(path, rows)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        load_prompts(str(path), **kwargs)


def test_malformed_json_and_unknown_file_types_are_named(tmp_path):
    bad = tmp_path / "broken.jsonl"
    bad.write_text('{"prompt": "fine"}\n{"prompt": \n')
    with pytest.raises(ValueError, match=r"data.path='.*broken.jsonl': could not load it"):
        load_prompts(str(bad))
    txt = tmp_path / "prompts.txt"
    txt.write_text("hello\n")
    with pytest.raises(ValueError, match=r"unknown file type '.txt'"):
        load_prompts(str(txt))
