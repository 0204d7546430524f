"""Model paths: one that looks local is looked up on disk at once, and never sent to the model hub.

``from_pretrained`` takes anything that is not a folder for a hub name: a mistyped local path
(``real_models/smollm2-135m`` where the folder is ``smollm2-135m-instruct``) costs a minute of retries and
ends in a hub error that never says "no such folder". A path looks local when the hub could not hold it
(absolute, ``~``, ``./``, ``../``, more than one ``/``, a trailing ``/``, characters a repository id cannot
have) or when its first part is a folder here (``real_models/...``). No torch here: the command checks its
model paths before it imports anything heavy.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?")  # a hub repository: name or org/name


def looks_local(value: str) -> bool:
    """Whether a model path means a folder on this machine rather than a hub repository."""
    text = str(value)
    if text.startswith(("/", "~", ".")) or "\\" in text or text.endswith("/") or text.count("/") > 1:
        return True
    if not HUB_ID.fullmatch(text) or "--" in text or ".." in text:
        return True
    return "/" in text and Path(text.split("/", 1)[0]).is_dir()


def missing_model(value: str, key: str, hub: bool = True) -> str | None:
    """The line for a model path that looks local (any path, where ``hub`` is False: a model only ever loaded
    from a folder) and does not exist, the folder nearest to it named; None for a path that exists or names a
    hub repository."""
    path = Path(str(value)).expanduser()
    if path.exists() or (hub and not looks_local(str(value))):
        return None
    parent = path.parent
    if parent.is_dir():
        folders = sorted(p.name for p in parent.iterdir() if p.is_dir() and not p.name.startswith("."))
        near = difflib.get_close_matches(path.name, folders, n=1, cutoff=0.5)
        where = f"{str(parent.resolve())!r} has no folder {path.name!r}"
        hint = f"; did you mean {key}={Path(str(value)).parent / near[0]}?" if near else ""
    else:
        missing = next(p for p in [*reversed(path.parents), path] if not p.exists())
        where, hint = f"the folder {str(missing)!r} does not exist", ""
    return (f"{key}={str(value)!r} does not exist: {where}{hint or '.'} Give a model directory saved with "
            "save_pretrained (config.json and the weights)" + (", or a hub name (org/name)" if hub else ""))
