"""BPR-MF (Rendle et al., UAI 2009): embeddings only, no graph; score ŷ_ui = e_u · e_i.

It shows that the unlearning code does not depend on propagation: Ē = E⁰, whatever graph is given.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unlearnrec.backbones.base import Backbone, check_init
from unlearnrec.config import check_ranges
from unlearnrec.data.graph import Graph


@dataclass(frozen=True)
class MFConfig:
    dim: int = 64
    reg: float = 1e-4
    init_std: float = 0.1
    init: str = "normal"  # or "xavier" (see LightGCNConfig)

    RANGES = {"dim": "[1, 65536]", "reg": ">= 0", "init_std": "> 0"}

    def __post_init__(self):
        check_ranges(self)
        check_init(self.init, self.init_std)


class MF(Backbone):
    """Matrix factorisation trained with BPR: ``propagate`` returns E⁰ and ignores the graph."""

    name = "mf"

    def __init__(
        self,
        num_users: int,
        num_items: int,
        config: MFConfig = MFConfig(),
        generator: torch.Generator | None = None,
    ):
        super().__init__(
            num_users, num_items, config.dim, config.reg, config.init_std, generator, init=config.init
        )
        self.config = config

    def propagate(self, graph: Graph | None, e0: torch.Tensor) -> torch.Tensor:
        return e0
