"""Mistakes in a command line's overrides, answered before Hydra reads them, with the fix in one line.

Hydra's own answers point elsewhere: ``fit --algo=egpo`` prints a usage line of ``__main__.py``; ``fit eta=2``
suggests ``+eta=2``, which would add an unused key; ``algo.etaa=2`` says "Key 'etaa' is not in struct" without
the key it resembles. Here:
- an option with dashes that is not one of Hydra's flags → ``write algo=egpo``;
- a key the composed config does not have → the keys it resembles (``did you mean algo.eta=2?``: a key of a
  group given at the top, a typo), the keys of the group it was meant for, and the group's other options
  that have it.

The cheap part runs for every command: each override's key is looked up in the YAML files of the chosen
options. Only a key not found there costs a composition of the config (Hydra's compose API, a fraction of a
second), which either finds it (a preset adds it) or gives the suggestions. Multiruns are left to Hydra: a
swept group (``algo=mpo,egpo``) has no one config to compare a key with.
"""

from __future__ import annotations

import difflib
from importlib.resources import files
from typing import Any

from omegaconf import OmegaConf

HYDRA_FLAGS = {"--help", "--hydra-help", "--version", "--cfg", "--resolve", "--package", "--run", "--multirun",
               "--shell-completion", "--config-path", "--config-name", "--config-dir", "--experimental-rerun", "--info"}


def check_dashes(command: str, args: list[str]) -> None:
    """``--algo=egpo`` (or ``--algo egpo``): overrides have no dashes; say how to write it."""
    for i, arg in enumerate(args):
        if not arg.startswith("--") or arg.split("=", 1)[0] in HYDRA_FLAGS or arg == "--":
            continue
        name, eq, value = arg[2:].partition("=")
        if not eq and i + 1 < len(args) and not args[i + 1].startswith("-") and "=" not in args[i + 1]:
            value = args[i + 1]
        fix = f"{name}={value or '<value>'}"
        raise SystemExit(f"lit_nash {command}: {arg!r} is not an option: overrides are written without dashes: {fix} "
                         f"(python -m lit_nash {command} {fix})")


def _yaml(path: str):
    node = files("lit_nash.conf")
    for part in path.split("/"):
        node = node.joinpath(part)
    if not node.is_file():
        return None
    with node.open() as f:
        return OmegaConf.load(f)


def _defaults(config: Any) -> dict[str, str | None]:
    """The group → option entries of a config's defaults list."""
    found = {}
    entries = OmegaConf.to_container(config, resolve=False).get("defaults", []) if OmegaConf.is_dict(config) else []
    for entry in entries:
        if isinstance(entry, dict):
            for key, value in entry.items():
                group = str(key).removeprefix("override ").removeprefix("optional ").strip().lstrip("/")
                found[group] = None if value is None else str(value)
    return found


def _has(config: Any, keys: list[str]) -> bool:
    for key in keys:
        if not OmegaConf.is_dict(config) or key not in config.keys():  # `in` is False for a ??? value
            return False
        config = config._get_node(key)
    return True


def _found_in_files(command: str, key: str, choices: dict[str, str | None]) -> bool:
    """Whether the key is in the YAML of its group's chosen option or of the primary config (no composition)."""
    top, *rest = key.split(".")
    primary = _yaml(f"{command}.yaml")
    if primary is None:
        return True  # not a config of ours: Hydra answers
    if top in choices:
        if not rest:
            return True  # a group's option: Hydra lists the valid ones
        option = _yaml(f"{top}/{choices[top]}.yaml") if choices[top] else None
        if option is not None and _has(option, rest):
            return True
    return _has(primary, [top, *rest])  # the primary config's own keys, its groups' included (trainer.max_epochs)


def _compose(command: str, overrides: list[str]):
    """The composed config (with Hydra's own node) of these overrides; None when it does not compose."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    try:
        with initialize_config_module("lit_nash.conf", version_base="1.3"):
            return compose(command, overrides=overrides, return_hydra_config=True)
    except Exception:
        return None
    finally:
        GlobalHydra.instance().clear()


def _paths(node: Any, prefix: str = "") -> dict[str, Any]:
    """Every key's dotted path → its node (sections and values), without resolving anything."""
    paths = {}
    for key in node.keys():
        child = node._get_node(key)
        path = f"{prefix}{key}"
        paths[path] = child
        if OmegaConf.is_dict(child) and not child._is_interpolation() and not child._is_missing():
            paths.update(_paths(child, f"{path}."))
    return paths


def _as_fix(path: str, node: Any, value: str) -> str:
    """How to write the key a mistake resembles: ``algo.eta=2``, or a section with its keys."""
    if OmegaConf.is_dict(node) and not node._is_interpolation():
        return f"{path}.<key>=... ({path}'s keys: {', '.join(str(k) for k in node.keys())})"
    return f"{path}={value}"


def _options_with(group: str, key: str) -> list[str]:
    folder = files("lit_nash.conf").joinpath(group)
    names = sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml")) if folder.is_dir() else []
    return [f"{group}={name}" for name in names if _has(_yaml(f"{group}/{name}.yaml"), [key])]


def unknown_key(command: str, override: str, config: Any) -> str | None:
    """The line for an override whose key ``config`` (composed, with its ``hydra`` node) lacks; None if it has it."""
    key, _, value = override.partition("=")
    parts = key.split(".")
    choices = dict(config.hydra.runtime.choices)
    node, walked = config, []
    for part in parts:
        if not OmegaConf.is_dict(node):
            return None  # a key below a value: Hydra says so
        if part not in node.keys() or (not walked and part == "hydra"):
            break
        node, walked = node._get_node(part), [*walked, part]
    else:
        return None
    missing = parts[len(walked)]
    if not walked:  # an unknown top-level key: a group's key given at the top, or a typo
        paths = {p: n for p, n in _paths(config).items() if p != "hydra" and not p.startswith("hydra.")}
        close = [p for p in paths if p.endswith("." + key)]  # a group's key given at the top: eta → algo.eta
        if not close:  # a typo of a key's name
            last = {}
            for p in paths:
                last.setdefault(p.rsplit(".", 1)[-1], p)
            close = [last[name] for name in difflib.get_close_matches(parts[-1], list(last), n=2)]
        tops = sorted(({p.split(".", 1)[0] for p in paths} | set(choices))
                      - {"command"} - {g for g in choices if "/" in g})
        hint = f"did you mean {' or '.join(_as_fix(c, paths[c], value) for c in close)}?" if close else \
            f"{command}'s keys and groups are {', '.join(tops)}"
        return f"lit_nash {command}: {command} has no key {key!r} (from {override!r}); {hint}"
    parent = ".".join(walked)
    keys = sorted(str(k) for k in node.keys())
    what = f"{parent}={choices[parent]}" if parent in choices and choices[parent] else parent
    near = difflib.get_close_matches(missing, keys, n=1)
    elsewhere = [o for o in _options_with(parent, missing) if o != what] if parent in choices and len(walked) == 1 else []
    return (f"lit_nash {command}: {what} has no key {missing!r} (from {override!r})"
            + (f"; did you mean {parent}.{near[0]}={value}?" if near else ".")
            + (f" It is a key of {', '.join(elsewhere)}." if elsewhere else "")
            + f" {what}'s keys: {', '.join(keys)}")


def check_keys(command: str, args: list[str]) -> None:
    """Exit with ``unknown_key``'s line for the first override whose key the command's config lacks."""
    if "-m" in args or "--multirun" in args:
        return
    plain = [a for a in args if "=" in a and not a.startswith(("+", "~", "-", "hydra.", "hydra/"))
             and "/" not in a.split("=", 1)[0]]
    primary = _yaml(f"{command}.yaml")
    choices = _defaults(primary) if primary is not None else {}
    for a in plain:
        key, _, value = a.partition("=")
        if key in choices:
            choices[key] = value
    for preset in ("task", "sweep"):  # a preset chooses options of other groups (task=text: data=prompts, ...)
        chosen = _yaml(f"{preset}/{choices[preset]}.yaml") if choices.get(preset) else None
        choices.update({g: o for g, o in _defaults(chosen).items() if g in choices and g not in dict(
            a.split("=", 1) for a in plain)})
    suspicious = [a for a in plain if not _found_in_files(command, a.split("=", 1)[0], choices)]
    if not suspicious:
        return
    config = _compose(command, [a for a in args if not a.startswith("-") and a not in suspicious])
    if config is None:
        return  # Hydra answers with its own message
    for override in suspicious:
        if line := unknown_key(command, override, config):
            raise SystemExit(line)
