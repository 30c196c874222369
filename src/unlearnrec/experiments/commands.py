"""CLI commands of this package: ``register(sub, common)`` adds its sub-parsers."""


def register(sub, common) -> None:
    """Add this package's sub-commands to the ``unlearnrec`` parser."""
