"""The checks of configured values, written once: every message names the key, the value and what is allowed.

Each returns the value as the type it should be (an integer count as ``int``), so callers write
``self.k = integer("algo.k", k, minimum=1)``.
"""

from __future__ import annotations

from typing import Any, Iterable


def is_integer(value: Any) -> bool:
    """A whole number that is not a bool (YAML's ``true`` is not a count)."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and int(value) == value


def integer(key: str, value: Any, minimum: int = 0, what: str = "", maximum: int | None = None) -> int:
    """An integer ≥ ``minimum`` (and ≤ ``maximum``); ``what`` says what it counts."""
    if not is_integer(value) or value < minimum or (maximum is not None and value > maximum):
        about = f" ({what})" if what else ""
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{key} must be an integer {bound}{about}, got {value}")
    return int(value)


def _number(value: Any) -> str:
    """'' for a number, else ' a number' (the message then says what kind of value goes there: not a list)."""
    return "" if not isinstance(value, bool) and isinstance(value, (int, float)) else " a number"


def positive(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{key} must be{_number(value)} > 0, got {value}")
    return float(value)


def non_negative(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{key} must be{_number(value)} >= 0, got {value}")
    return float(value)


def in_unit_interval(key: str, value: Any, open_left: bool = False, note: str = "") -> float:
    """A number in [0, 1], or (0, 1] with ``open_left``."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and (0 < value if open_left else 0 <= value) and value <= 1
    if not ok:
        interval = "(0, 1]" if open_left else "[0, 1]"
        raise ValueError(f"{key} must be{_number(value)} in {interval}{note}, got {value}" if _number(value)
                         else f"{key} must lie in {interval}{note}, got {value}")
    return float(value)


def choice(key: str, value: Any, choices: Iterable[Any]) -> Any:
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"{key} must be one of {choices}, got {value!r}")
    return value


def period(key: str, value: Any) -> int | None:
    """A period counted in steps: None/0 means never, otherwise an integer ≥ 1."""
    if value in (None, 0):
        return None
    if not is_integer(value) or value < 1:
        raise ValueError(f"{key} must be an integer >= 1 (or null for never), got {value}")
    return int(value)
