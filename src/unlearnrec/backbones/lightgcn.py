"""LightGCN (He et al., SIGIR 2020): parameter-free propagation, mean readout."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unlearnrec.backbones.base import Backbone, check_init
from unlearnrec.config import check_ranges
from unlearnrec.data.graph import Graph, propagate_sum


@dataclass(frozen=True)
class LightGCNConfig:
    """``init``: "normal" draws E⁰ from N(0, init_std²) (LightGCN-PyTorch, std 0.1); "xavier" is the
    Xavier-uniform of SELFRec and SSLRec (``init_std`` unused), whose scale the SSL backbones' absolute
    noise norm ε and InfoNCE were tuned with."""

    dim: int = 64
    layers: int = 3
    reg: float = 1e-4
    init_std: float = 0.1
    init: str = "normal"

    RANGES = {"dim": "[1, 65536]", "layers": "[0, 64]", "reg": ">= 0", "init_std": "> 0"}

    def __post_init__(self):
        check_ranges(self)
        check_init(self.init, self.init_std)


class LightGCN(Backbone):
    """Ē = mean(E⁰, ÂE⁰, ..., Â^L E⁰) (docs/method.md §1), score ŷ_ui = ē_u · ē_i."""

    name = "lightgcn"

    def __init__(
        self,
        num_users: int,
        num_items: int,
        config: LightGCNConfig = LightGCNConfig(),
        generator: torch.Generator | None = None,
    ):
        super().__init__(
            num_users, num_items, config.dim, config.reg, config.init_std, generator, init=config.init
        )
        self.config = config
        self.layers = config.layers

    def propagate(self, graph: Graph, e0: torch.Tensor) -> torch.Tensor:
        return self.readout(graph.adj, e0)

    def readout(self, adj: torch.Tensor, e0: torch.Tensor) -> torch.Tensor:
        """Ē (N, d) over a given normalised adjacency ``adj`` (N x N sparse): SGL's views reuse it.

        One fused sum (L products, the layer sum folded into them, forward and backward), not L products
        plus L additions and a division over N x d (issue 2: that dense work was ~40% of a step).
        """
        return propagate_sum(adj, e0, self.layers, 1.0 / (self.layers + 1))
