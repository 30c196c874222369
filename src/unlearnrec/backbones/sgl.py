"""SGL (Wu et al., SIGIR 2021), edge-dropout variant: LightGCN plus InfoNCE between two edge-dropped views.

Views and their cost: each view is the normalised adjacency of a random subgraph that keeps every
training edge with probability ``keep`` (renormalised by the subgraph's own degrees, as in SGL-ED).
Building one is an O(nnz) pass on the CPU. SGL draws the two views once per epoch; the training loop
announces epochs through :meth:`Backbone.on_epoch_start`, where this class draws and keeps them *for
that graph object only*. A ``loss`` call on any other graph (a residual graph during unlearning, a
caller that never announces epochs) draws two fresh views from the given generator instead, which is
equally correct but costs two graph builds per step (see ``benchmarks/bench_backbones.py``). So a view
can never contain an edge of a graph other than the one the loss is computed on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unlearnrec.backbones.base import Batch, ssl_term
from unlearnrec.backbones.lightgcn import LightGCN, LightGCNConfig
from unlearnrec.config import check_ranges
from unlearnrec.data.graph import Graph


@dataclass(frozen=True)
class SGLConfig(LightGCNConfig):
    """LightGCN's fields plus the augmentation.

    ``keep``: edge keep probability of a view (UnlearnRec/SSLRec 0.8; the SGL paper's best drop ratio
    is 0.1, i.e. keep 0.9, on Yelp2018). ``ssl_weight``: λ of the InfoNCE term (UnlearnRec 1e-2; SGL
    paper 0.1 on Yelp2018). ``temperature``: τ (UnlearnRec 0.1; the SGL paper uses 0.2).
    """

    keep: float = 0.8
    ssl_weight: float = 1e-2
    temperature: float = 0.1

    RANGES = {**LightGCNConfig.RANGES, "keep": "(0, 1]", "ssl_weight": ">= 0", "temperature": "> 0"}

    def __post_init__(self):
        check_ranges(self)
        super().__post_init__()
        if not 0.0 < self.keep <= 1.0:
            raise ValueError(f"keep must be in (0, 1], got {self.keep}")
        if self.temperature <= 0 or self.ssl_weight < 0:
            raise ValueError("temperature > 0 and ssl_weight >= 0 are required")


class SGL(LightGCN):
    """LightGCN whose loss adds λ·(InfoNCE_users + InfoNCE_items) between two edge-dropped views.

    BPR is computed on the full graph (the inherited ``propagate``); the views only feed the SSL term.
    """

    name = "sgl"

    def __init__(
        self,
        num_users: int,
        num_items: int,
        config: SGLConfig = SGLConfig(),
        generator: torch.Generator | None = None,
    ):
        super().__init__(num_users, num_items, config, generator)
        self.config: SGLConfig = config
        # (graph, view1, view2) drawn by on_epoch_start; used only while the loss is on that same graph
        self._views: tuple[Graph, torch.Tensor, torch.Tensor] | None = None

    def draw_views(
        self, graph: Graph, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Two independent edge-dropped normalised adjacencies (N x N sparse) of ``graph``."""
        return graph.dropped(self.config.keep, generator), graph.dropped(self.config.keep, generator)

    def __getstate__(self):
        # a copy (deepcopy, pickle) never carries the epoch's views: they hold the training graph's edges,
        # which a copy made to forget some of them must not keep
        state = super().__getstate__()
        state["_views"] = None
        return state

    def on_epoch_start(self, graph: Graph, generator: torch.Generator | None = None) -> None:
        """Draw this epoch's two views of ``graph`` (SGL re-draws them every epoch)."""
        self._views = (graph, *self.draw_views(graph, generator))

    def ssl_loss(
        self, graph: Graph, batch: Batch, e0: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        """λ (InfoNCE(z1_u, z2_u) + InfoNCE(z1_i, z2_i)) over the batch's unique users and positive items.

        z1, z2 (N, d) are LightGCN readouts of ``e0`` over the two views (SGL's L_ssl, user and item sides).
        """
        if self._views is not None and self._views[0] is graph:
            v1, v2 = self._views[1], self._views[2]
        else:
            v1, v2 = self.draw_views(graph, generator)
        z1 = self.readout(v1, e0)
        z2 = self.readout(v2, e0)
        return ssl_term(batch, z1, z2, self.num_users, self.config.temperature, self.config.ssl_weight)
