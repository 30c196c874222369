"""The literal registry of unlearning methods: name -> (Unlearner class, its config dataclass).

Each method module is imported explicitly when its name is asked for, so that a heavy or
optional method never slows down the others; an unknown name lists the valid ones.
"""

from __future__ import annotations

from typing import Any

from unlearnrec.config import from_dict
from unlearnrec.errors import ConfigError

METHOD_NAMES = ("retrain", "unlearnrec", "receraser", "grapheraser", "gif", "ceu")


def method_class(name: str):
    """(Unlearner subclass, config dataclass) of method ``name``."""
    if name == "retrain":
        from unlearnrec.unlearn.retrain import Retrain, RetrainConfig

        return Retrain, RetrainConfig
    if name == "unlearnrec":
        from unlearnrec.unlearn.unlearnrec import UnlearnRec, UnlearnRecConfig

        return UnlearnRec, UnlearnRecConfig
    if name == "receraser":
        from unlearnrec.unlearn.receraser import RecEraser, RecEraserConfig

        return RecEraser, RecEraserConfig
    if name == "grapheraser":
        from unlearnrec.unlearn.grapheraser import GraphEraser, GraphEraserConfig

        return GraphEraser, GraphEraserConfig
    if name == "gif":
        from unlearnrec.unlearn.gif import GIF, GIFConfig

        return GIF, GIFConfig
    if name == "ceu":
        from unlearnrec.unlearn.ceu import CEU, CEUConfig

        return CEU, CEUConfig
    raise ConfigError(f"unknown method '{name}' (valid: {', '.join(METHOD_NAMES)})")


def build_method(name: str, config: dict[str, Any] | None = None, seed: int = 0):
    """Instantiate method ``name`` with a config dict (unknown keys rejected) and a seed."""
    cls, cfg_cls = method_class(name)
    return cls(from_dict(cfg_cls, dict(config or {}), name), seed=seed)
