"""Each default is written once, in the constructor's signature: every key of conf/algo/ and conf/preference/
equals the signature's default of the class it instantiates (a mandatory ``???`` path has none), so the YAML,
``fit --help`` and docs/config.md (checked against the YAML by tests/test_docs.py) cannot drift from the code."""

import importlib
import inspect
from pathlib import Path

import pytest
import yaml

CONF = Path(__file__).resolve().parents[1] / "conf"
FILES = sorted((CONF / "algo").glob("*.yaml")) + sorted((CONF / "preference").glob("*.yaml"))


def signature_defaults(target: str) -> dict:
    module, name = target.rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    params = {}
    for klass in reversed(cls.__mro__):  # a subclass's **kwargs go to its base: collect the chain's defaults
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for p in inspect.signature(init).parameters.values():
            if p.default is not inspect.Parameter.empty:
                params[p.name] = p.default
    return params


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_yaml_value_is_the_signature_default(path):
    config = yaml.safe_load(path.read_text())
    defaults = signature_defaults(config.pop("_target_"))
    for key, value in config.items():
        if value == "???" or (isinstance(value, str) and value.startswith("${")):
            continue  # mandatory, or set from another part of the run
        assert key in defaults, f"{path.name}: {key} is not an argument with a default of its class"
        default = defaults[key]
        default = list(default) if isinstance(default, tuple) else default
        assert value == default, f"{path.name}: {key} is {value!r} in the YAML, {default!r} in the signature"
