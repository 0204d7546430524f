"""Prompt datasets: prompts loaded with ``datasets`` from a local file, a saved dataset folder or the hub.

A prompt is a string, or a conversation (a list of ``{"role", "content"}`` messages, to which the policy
applies its chat template). The DataModule that feeds training steps from them is the engine's
``RolloutDataModule`` (built by ``lit_nash.engine.prompt_dataset``).
"""

from __future__ import annotations

from typing import Any

from lit_nash.validate import is_integer as _is_int

Prompt = str | list[dict[str, str]]


def load_prompts(path: str, column: str = "prompt", split: str = "train", subset: str | None = None,
                 max_prompts: int | None = None) -> list[Prompt]:
    """Prompts from a local JSONL / JSON / Parquet / CSV file, a saved dataset directory, or a hub dataset.

    A prompt is a string, or a conversation: a list of ``{"role", "content"}`` messages (the policy applies
    its chat template). Trailing assistant turns are dropped: in preference datasets they are a reference
    answer, not part of the prompt. The first ``max_prompts`` rows are kept.
    """
    from lit_nash.tables import load_table

    if max_prompts is not None and (not _is_int(max_prompts) or max_prompts < 1):
        raise ValueError(f"data.max_prompts must be >= 1 (an integer) or null (all rows), got {max_prompts}")
    if not isinstance(column, str) or not column:
        raise ValueError(f"data.column must be a column name, got {column!r}")
    max_prompts = None if max_prompts is None else int(max_prompts)
    table, where = load_table(path, split=split, subset=subset), f"data.path={path!r}"
    if column not in table.column_names:
        raise ValueError(f"{where}: no column {column!r}; columns are {table.column_names} (set data.column)")
    rows = table[column] if max_prompts is None else table.select(range(min(max_prompts, len(table))))[column]
    return [_prompt(row, i, where, column) for i, row in enumerate(rows)]



def _prompt(row: Any, i: int, where: str, column: str) -> Prompt:
    if row is None:
        raise ValueError(f"{where}: row {i} has no {column!r} field; give every row a prompt (or set data.column "
                         "to the column that holds them)")
    if isinstance(row, str):
        if not row.strip():
            raise ValueError(f"{where}: row {i} of column {column!r} is an empty prompt")
        return row
    if isinstance(row, list) and row and all(isinstance(m, dict) and {"role", "content"} <= set(m) for m in row):
        messages = [{"role": str(m["role"]), "content": str(m["content"])} for m in row]
        while messages and messages[-1]["role"] == "assistant":
            messages.pop()
        if messages:
            return messages
    raise ValueError(
        f"{where}: row {i} of column {column!r} is neither a prompt string nor a conversation "
        f"(a list of {{'role', 'content'}} messages with a non-assistant turn): {str(row)[:200]!r}"
    )
