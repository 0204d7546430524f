"""lit_nash: Nash learning from human feedback, on Lightning."""

__version__ = "0.1.0"


def _register_resolvers() -> None:
    """conf/'s own OmegaConf resolvers (``${lit_nash_run:}``), for every way of composing it: the CLI, and
    Hydra's compose API in Python (tests, notebooks) that never runs the CLI."""
    from lit_nash.cli import register_resolvers

    register_resolvers()


_register_resolvers()
