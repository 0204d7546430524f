"""The floors of docs/architecture.md hold in the code: every import inside ``lit_nash`` (module level and
inside functions, read from the source with ``ast``) points down a floor or stays on its own, no "never"
arrow exists, the import graph has no circle, and only the build edge calls ``instantiate``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "lit_nash"

# floor of each module (longest matching prefix wins); 1 is the bottom
FLOORS = {
    "lit_nash.games": 1, "lit_nash.models": 1, "lit_nash.guards": 1, "lit_nash.rng": 1,
    "lit_nash.tracking": 1, "lit_nash.mlflow_logger": 1, "lit_nash.progress": 1, "lit_nash.validate": 1, "lit_nash.tables": 1, "lit_nash.plots": 1,
    "lit_nash.glossary": 1, "lit_nash.ranking": 1, "lit_nash.run_summary": 1, "lit_nash.run_groups": 1,
    "lit_nash.result_table": 1, "lit_nash.benchmark_table": 1, "lit_nash.heatmap": 1, "lit_nash.head_to_head": 1, "lit_nash.mlflow_views": 1,
    "lit_nash.streams": 1, "lit_nash.model_paths": 1, "lit_nash.preflight": 1,
    "lit_nash.policy": 2, "lit_nash.generation": 2, "lit_nash.preference": 2, "lit_nash.data": 2,
    "lit_nash.rollout": 3,
    "lit_nash.algorithms": 4,
    "lit_nash.engine": 5, "lit_nash.metrics": 5, "lit_nash.evaluation": 5, "lit_nash.checkpointing": 5, "lit_nash.rollout_metrics": 5,
    "lit_nash.sharding": 5, "lit_nash.checkpoint_integrity": 5, "lit_nash.run_status": 5, "lit_nash.sweep_resume": 5,
    "lit_nash.build": 6,
    "lit_nash.fit": 7, "lit_nash.eval": 7, "lit_nash.bench": 7, "lit_nash.compare": 7, "lit_nash.train_preference": 7,
    "lit_nash.cli": 7, "lit_nash.overrides": 7, "lit_nash.__main__": 7, "lit_nash": 7,
}
NEVER = [  # (importer prefix, imported prefix): arrows that must not exist even where the floors would allow them
    ("lit_nash.policy", "lit_nash.algorithms"), ("lit_nash.policy", "lit_nash.engine"),
    ("lit_nash.preference", "lit_nash.policy"), ("lit_nash.games", "lit_nash.policy"),
    ("lit_nash.games", "lit_nash.algorithms"), ("lit_nash.algorithms", "lit_nash.engine"),
    ("lit_nash.generation", "lit_nash.rollout"), ("lit_nash.compare", "lit_nash.eval"),
    ("lit_nash.eval", "lit_nash.fit"), ("lit_nash.bench", "lit_nash.fit"),
]


def module_name(path: Path) -> str:
    parts = ("lit_nash",) + path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in ROOT.rglob("*.py") if "conf" not in p.relative_to(ROOT).parts}


def floor(module: str) -> int:
    best = max((k for k in FLOORS if module == k or module.startswith(k + ".")), key=len)
    return FLOORS[best]


def imports(module: str) -> set[str]:
    """The lit_nash modules ``module`` imports, anywhere in its source (an ``from a import b`` of a submodule
    counts as that submodule)."""
    tree = ast.parse(MODULES[module].read_text())
    package = module if MODULES[module].name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        found |= {n for n in names if n in MODULES}
    found.discard(module)
    return found


GRAPH = {m: imports(m) for m in MODULES}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_import_points_up_a_floor(module):
    up = [(m, floor(m)) for m in GRAPH[module] if floor(m) > floor(module) and not module.startswith(m + ".")]
    assert not up, f"{module} (floor {floor(module)}) imports {up} from a higher floor"


def test_no_never_arrow():
    bad = [(a, b) for a, deps in GRAPH.items() for b in deps for x, y in NEVER
           if (a == x or a.startswith(x + ".")) and (b == y or b.startswith(y + "."))]
    assert not bad, bad


def test_no_import_circle():
    # package __init__ modules re-export their submodules: the edge package -> submodule is not a dependency
    graph = {m: {d for d in deps if not d.startswith(m + ".")} for m, deps in GRAPH.items()}
    state: dict[str, int] = {}

    def visit(m, path):
        state[m] = 1
        for d in graph[m]:
            if state.get(d) == 1:
                raise AssertionError("import circle: " + " -> ".join(path[path.index(d):] + [d]))
            if d not in state:
                visit(d, path + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_only_the_build_edge_instantiates():
    callers = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hydra.utils"):
                if any(a.name == "instantiate" for a in node.names):
                    callers.append(module)
            if isinstance(node, ast.Attribute) and node.attr == "instantiate":
                callers.append(module)
    assert set(callers) == {"lit_nash.build"}, callers


def test_every_module_has_a_floor():
    assert all(floor(m) for m in MODULES)
