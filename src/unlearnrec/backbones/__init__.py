"""Backbones behind one contract; the registry is a literal dict."""

from __future__ import annotations

from typing import Any

import torch

from unlearnrec.backbones.base import Backbone, Batch
from unlearnrec.backbones.fixed import FixedEmbedding, FixedEmbeddingConfig
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

# what a checkpoint may name: the trainable backbones plus served ensembles (RecEraser, GraphEraser)
LOADABLE: dict[str, tuple[type[Backbone], type]] = {
    **BACKBONES,
    "fixed": (FixedEmbedding, FixedEmbeddingConfig),
}


def backbone_config(name: str, values: dict[str, Any] | None = None, registry=BACKBONES):
    """The frozen config dataclass of backbone ``name`` from a dict (unknown keys rejected)."""
    if name not in registry:
        raise ConfigError(f"unknown backbone '{name}' (valid: {', '.join(sorted(registry))})")
    return from_dict(registry[name][1], dict(values or {}), "model")


def build_backbone(
    name: str,
    num_users: int,
    num_items: int,
    config=None,
    generator: torch.Generator | None = None,
    registry=BACKBONES,
) -> Backbone:
    """Instantiate backbone ``name``; ``config`` is its dataclass or a dict of its fields."""
    if config is None or isinstance(config, dict):
        config = backbone_config(name, config, registry)
    if name not in registry:
        raise ConfigError(f"unknown backbone '{name}' (valid: {', '.join(sorted(registry))})")
    return registry[name][0](num_users, num_items, config, generator=generator)


__all__ = [
    "BACKBONES",
    "LOADABLE",
    "FixedEmbedding",
    "MF",
    "SGL",
    "Backbone",
    "Batch",
    "LightGCN",
    "LightGCNConfig",
    "MFConfig",
    "SGLConfig",
    "SimGCL",
    "SimGCLConfig",
    "backbone_config",
    "build_backbone",
]
