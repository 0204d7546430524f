"""Security defaults, checked on the source and the configs: weights load only through safetensors or
``weights_only=True``, remote code never runs by default, and no command starts a network server."""

import ast
import re

from tests.cli import REPO

SOURCES = sorted((REPO / "lit_nash").rglob("*.py"))


def calls(name: str):
    """Every call of a function or method called ``name`` in the package, with its file."""
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                func = node.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
                if called == name:
                    yield path, node


def keyword(node: ast.Call, key: str):
    return next((k.value for k in node.keywords if k.arg == key), None)


def test_torch_load_is_always_weights_only():
    found = list(calls("load"))
    loads = [(p, n) for p, n in found if isinstance(n.func, ast.Attribute) and getattr(n.func.value, "id", "") == "torch"]
    assert loads, "the package loads checkpoints somewhere"
    for path, node in loads:
        value = keyword(node, "weights_only")
        assert isinstance(value, ast.Constant) and value.value is True, f"{path}:{node.lineno}"
    for path, node in calls("fit"):  # Lightning's own checkpoint loading on resume
        if keyword(node, "ckpt_path") is not None:
            value = keyword(node, "weights_only")
            assert isinstance(value, ast.Constant) and value.value is True, f"{path}:{node.lineno}"


def test_from_pretrained_never_trusts_remote_code_unless_configured():
    for path, node in calls("from_pretrained"):
        value = keyword(node, "trust_remote_code")
        assert not (isinstance(value, ast.Constant) and value.value is True), f"{path}:{node.lineno}"
    models = [(p, n) for p, n in calls("from_pretrained") if "Tokenizer" not in ast.unparse(n.func)]
    assert {p.name for p, _ in models} == {"models.py"}, "one loader of model weights, lit_nash.models.load_pretrained"
    loaders = list(calls("load_pretrained"))
    assert {p.name for p, _ in loaders} == {"causal_lm.py", "text.py"}, "the policy and the text preference models"
    for path, node in loaders:  # trust_remote_code comes from the config, never a literal True
        assert not any(isinstance(a, ast.Constant) and a.value is True for a in node.args), f"{path}:{node.lineno}"
        value = keyword(node, "trust_remote_code")
        assert not (isinstance(value, ast.Constant) and value.value is True), f"{path}:{node.lineno}"
    for path, node in models:  # model weights: safetensors only
        value = keyword(node, "use_safetensors")
        assert isinstance(value, ast.Constant) and value.value is True, f"{path}:{node.lineno}"
    for path in sorted((REPO / "conf").rglob("*.yaml")):
        for line in path.read_text().splitlines():
            if line.strip().startswith("trust_remote_code:"):
                assert line.split(":", 1)[1].split("#")[0].strip() == "false", f"{path}: {line}"


def test_no_command_starts_a_network_server():
    servers = re.compile(r"\b(socketserver|http\.server|HTTPServer|uvicorn|flask|\.listen\(|\.bind\(|mlflow\.server|run_server)\b")
    for path in SOURCES:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            assert not servers.search(line), f"{path}:{n}: {line.strip()}"
