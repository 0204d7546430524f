"""lit_nash: Nash learning from human feedback, on Lightning."""

__version__ = "0.1.0"
