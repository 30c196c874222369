"""Backbones behind one contract; the registry is a literal dict."""

from __future__ import annotations

from typing import Any

import torch

from unlearnrec.backbones.base import Backbone, Batch
from unlearnrec.backbones.lightgcn import LightGCN, LightGCNConfig
from unlearnrec.backbones.mf import MF, MFConfig
from unlearnrec.backbones.sgl import SGL, SGLConfig
from unlearnrec.backbones.simgcl import SimGCL, SimGCLConfig
from unlearnrec.config import from_dict
from unlearnrec.errors import ConfigError

BACKBONES: dict[str, tuple[type[Backbone], type]] = {
    "lightgcn": (LightGCN, LightGCNConfig),
    "sgl": (SGL, SGLConfig),
    "simgcl": (SimGCL, SimGCLConfig),
    "mf": (MF, MFConfig),
}


def backbone_config(name: str, values: dict[str, Any] | None = None):
    """The frozen config dataclass of backbone ``name`` from a dict (unknown keys rejected)."""
    if name not in BACKBONES:
        raise ConfigError(f"unknown backbone '{name}' (valid: {', '.join(sorted(BACKBONES))})")
    return from_dict(BACKBONES[name][1], dict(values or {}), "model")


def build_backbone(name: str, num_users: int, num_items: int, config=None,
                   generator: torch.Generator | None = None) -> Backbone:
    """Instantiate backbone ``name``; ``config`` is its dataclass or a dict of its fields."""
    if config is None or isinstance(config, dict):
        config = backbone_config(name, config)
    cls = BACKBONES[name][0] if name in BACKBONES else None
    if cls is None:
        raise ConfigError(f"unknown backbone '{name}' (valid: {', '.join(sorted(BACKBONES))})")
    return cls(num_users, num_items, config, generator=generator)


__all__ = [
    "BACKBONES", "MF", "SGL", "Backbone", "Batch", "LightGCN", "LightGCNConfig", "MFConfig", "SGLConfig",
    "SimGCL", "SimGCLConfig", "backbone_config", "build_backbone",
]
