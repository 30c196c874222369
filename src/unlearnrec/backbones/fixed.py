"""FixedEmbedding: final embeddings stored as they are (served ensembles)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unlearnrec.backbones.base import Backbone
from unlearnrec.config import check_ranges
from unlearnrec.data.graph import Graph


@dataclass(frozen=True)
class FixedEmbeddingConfig:
    dim: int = 64

    RANGES = {"dim": "[1, 65536]"}

    def __post_init__(self):
        check_ranges(self)


class FixedEmbedding(Backbone):
    """A backbone whose final embeddings are its table: Ē = E⁰, ``propagate`` is the identity.

    It serves an ensemble (RecEraser's aggregated embeddings, GraphEraser's weighted shard
    scores) as an ordinary :class:`~unlearnrec.model.TrainedModel`, so evaluation,
    recommendation, membership metrics, node erasure and checkpoints work unchanged. It is
    loadable (``LOADABLE``) but not trainable, so it is not offered by ``unlearnrec train``.
    """

    name = "fixed"

    def __init__(
        self,
        num_users: int,
        num_items: int,
        config: FixedEmbeddingConfig = FixedEmbeddingConfig(),
        generator: torch.Generator | None = None,
    ):
        super().__init__(num_users, num_items, config.dim, reg=0.0, generator=generator)
        self.config = config
        self.e0.requires_grad_(False)

    @classmethod
    def from_embeddings(cls, user_emb: torch.Tensor, item_emb: torch.Tensor) -> FixedEmbedding:
        """Wrap final embeddings (U, d) and (I, d)."""
        out = cls(user_emb.shape[0], item_emb.shape[0], FixedEmbeddingConfig(dim=int(user_emb.shape[1])))
        with torch.no_grad():
            out.e0.copy_(torch.cat([user_emb, item_emb]).to(out.e0.dtype))
        return out

    def propagate(self, graph: Graph, e0: torch.Tensor) -> torch.Tensor:
        return e0
