"""The registry of unlearning methods: a literal dict, name -> (module, Unlearner class, config dataclass).

A method's module is imported only when its name is asked for, so that a heavy or optional method
never slows down the others. Adding a method is one new module and one line here; an unknown name
lists the valid ones.
"""

from __future__ import annotations

import importlib
from typing import Any

from unlearnrec.config import from_dict
from unlearnrec.errors import ConfigError

METHODS: dict[str, tuple[str, str, str]] = {
    "retrain": ("unlearnrec.unlearn.retrain", "Retrain", "RetrainConfig"),
    "unlearnrec": ("unlearnrec.unlearn.unlearnrec", "UnlearnRec", "UnlearnRecConfig"),
    "receraser": ("unlearnrec.unlearn.sharded.receraser", "RecEraser", "RecEraserConfig"),
    "grapheraser": ("unlearnrec.unlearn.sharded.grapheraser", "GraphEraser", "GraphEraserConfig"),
    "gif": ("unlearnrec.unlearn.gif", "GIF", "GIFConfig"),
    "ceu": ("unlearnrec.unlearn.ceu", "CEU", "CEUConfig"),
}
METHOD_NAMES = tuple(METHODS)


def method_class(name: str) -> tuple[type, type]:
    """(Unlearner subclass, config dataclass) of method ``name``; an unknown name lists the valid ones."""
    if name not in METHODS:
        raise ConfigError(f"unknown method '{name}' (valid: {', '.join(METHOD_NAMES)})")
    module, cls, cfg = METHODS[name]
    mod = importlib.import_module(module)
    return getattr(mod, cls), getattr(mod, cfg)


def build_method(name: str, config: dict[str, Any] | None = None, seed: int = 0):
    """Instantiate method ``name`` with a config dict (unknown keys rejected) and a seed."""
    cls, cfg_cls = method_class(name)
    return cls(from_dict(cfg_cls, dict(config or {}), name), seed=seed)
