"""One file per NLHF algorithm; each is a small ``Algorithm`` (a Lightning Callback) that registers itself.

``ALGORITHMS`` is the registry of the algorithms shipped here, by name (``registry()`` also lists any
other imported subclass, e.g. one of your own package's). Every module of this package is imported, so a
new algorithm is one file here (plus its YAML, doc page and test), and nothing to edit.
"""

from lit_nash.algorithms.base import Algorithm, registry

ALGORITHMS = registry()
globals().update({cls.__name__: cls for cls in ALGORITHMS.values()})

__all__ = ["ALGORITHMS", "Algorithm", "registry", *[cls.__name__ for cls in ALGORITHMS.values()]]
