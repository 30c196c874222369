"""unlearnrec: make graph-neural-network recommenders forget (UnlearnRec, SIGIR 2025, and beyond)."""

__version__ = "0.1.0"

from unlearnrec.errors import UnlearnRecError

__all__ = ["UnlearnRecError", "__version__"]
