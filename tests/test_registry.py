"""One source per fact: the algorithm registry (every ``Algorithm`` subclass with a ``name``, registered as it
is defined) is what the configs, the sweeps, ``bench``, the docs index and the tests are checked against, so
adding an algorithm cannot leave a hand-kept list behind silently."""

import re
from pathlib import Path

from lit_nash.algorithms import ALGORITHMS, registry

REPO = Path(__file__).resolve().parents[1]


def stems(folder: str, suffix: str, prefix: str = "") -> set[str]:
    return {p.name[len(prefix):-len(suffix)] for p in (REPO / folder).glob(f"{prefix}*{suffix}")}


def test_the_registry_is_the_algorithms_package():
    assert set(ALGORITHMS) == set(registry()) == stems("lit_nash/algorithms", ".py") - {
        "__init__", "base", "losses", "simulate", "two_call"}


def test_each_algorithm_has_its_config_page_and_test():
    names = set(ALGORITHMS)
    assert stems("conf/algo", ".yaml") == names
    assert stems("docs/algorithms", ".md") - {"README"} == names
    assert stems("tests/algorithms", ".py", "test_") >= names


def test_the_docs_index_lists_every_algorithm_once():
    index = (REPO / "docs" / "algorithms" / "README.md").read_text()
    listed = re.findall(r"^\| `([a-z_]+)` \| \[", index, flags=re.M)
    assert sorted(listed) == sorted(ALGORITHMS) and len(listed) == len(set(listed))


def test_bench_and_the_sweeps_take_every_registered_algorithm_by_default():
    bench = (REPO / "conf" / "bench.yaml").read_text()
    assert re.search(r"^\s+algos: null\b", bench, flags=re.M)
    for sweep in ("comal_cycle", "token_game"):
        text = (REPO / "sweeps" / f"{sweep}.yaml").read_text()
        assert re.search(r"^\s+algo: glob\(\*\)", text, flags=re.M), sweep
