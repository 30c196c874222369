"""RecEraser (Chen et al., "Recommendation Unlearning", WWW 2022) on any of our backbones.

1. Balanced partition of the training interactions into K shards by k-means on the pre-trained
   embeddings of the model being unlearned (InBP / UBP / IBP, see :mod:`.partition`).
2. One sub-model per shard: the same backbone and config as the model, trained from scratch on
   the shard's edges (graph over the full id space) with the normal training loop.
3. Attention-based adaptive aggregation (the paper's §3.3; the authors' ``attention_based_agg``):
   the K shard embeddings of a node are first moved to a common space by a per-shard transfer
   ẽ^k = W_t^k e^k + b_t^k, then weighted by
   α_k = softmax_k( hᵀ ReLU(W ẽ^k + b) ), ē = Σ_k α_k ẽ^k,
   with separate (W, b, h) for users and items; trained with BPR on all training edges while the
   sub-models stay frozen.
4. Forgetting retrains, from scratch, only the shards holding a forgotten edge, then the
   aggregator (from scratch too, so nothing learnt from a forgotten edge survives).

(choice) We aggregate the sub-models' *final* embeddings Ē^k (the paper's model-agnostic form;
the authors' LightGCN variant aggregates layer-0 rows and propagates them again on the full
graph). The result is served through :class:`~.partition.FixedEmbedding`, so it is an ordinary
``TrainedModel`` (see that class for why it cannot be re-loaded from disk).
(choice) W_t starts at the identity and b_t at 0 (the authors draw them from N(0, 0.01²)): with
few aggregation epochs the ensemble starts as the mean of the shard embeddings instead of ~0.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from unlearnrec.config import check_ranges
from unlearnrec.data.graph import Graph
from unlearnrec.data.interactions import Interactions
from unlearnrec.losses import bpr_loss
from unlearnrec.model import TrainedModel
from unlearnrec.unlearn.sharded.base import SHARD_RANGES, ShardedUnlearner
from unlearnrec.unlearn.sharded.partition import (
    RECERASER_KINDS,
    Partition,
    check_sharded_config,
    partition_interactions,
)
from unlearnrec.unlearn.sharded.pool import bpr_epochs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecEraserConfig:
    """RecEraser's knobs. K = 10 and slack 0.2 (cap 1.2·n/K) as in the paper and the authors' code.

    partition: "interaction" (InBP), "user" (UBP), "item" (IBP) or "random".
    shard_epochs / agg_epochs: epochs of each sub-model / of the aggregator.
    lr, batch_size: Adam learning rate and batch size of the shard sub-models;
    agg_lr, agg_batch_size: the same for the aggregator.
    workers: processes training shards in parallel (torch threads are split between them).
    attention_size: width of the attention MLP (the authors use d / 2; 0 means d / 2).
    transfer: use the per-shard transfer W_t^k, b_t^k before attention.
    mask_unseen: zero a shard's embedding of a node with no edge in that shard.
    """

    num_shards: int = 10
    partition: str = "interaction"
    kmeans_iters: int = 10
    slack: float = 0.2
    shard_epochs: int = 50
    agg_epochs: int = 20
    lr: float = 1e-2
    agg_lr: float = 1e-3
    batch_size: int = 2048
    agg_batch_size: int = 4096
    workers: int = 1
    attention_size: int = 0
    transfer: bool = True
    mask_unseen: bool = False

    RANGES = {
        "num_shards": "[1, 10000]",
        "kmeans_iters": "[1, 100000]",
        **SHARD_RANGES,
        "attention_size": "[0, 65536]",
    }

    def __post_init__(self):
        check_ranges(self)
        check_sharded_config(self, RECERASER_KINDS, "RecEraser", "kmeans_iters")


class AttentionAggregator(nn.Module):
    """RecEraser's attention over K shard embeddings; one (W, b, h) for users, one for items.

    forward(x (B, K, d), side) -> (aggregated (B, d), attention weights (B, K)).
    """

    def __init__(
        self,
        num_shards: int,
        dim: int,
        attention_size: int = 0,
        transfer: bool = True,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        a = attention_size or max(1, dim // 2)
        self.transfer = transfer
        if transfer:
            self.trans_w = nn.Parameter(torch.eye(dim).repeat(num_shards, 1, 1))  # (K, d, d)
            self.trans_b = nn.Parameter(torch.zeros(num_shards, dim))
        std = (2.0 / (a + dim)) ** 0.5  # the authors' Glorot-like init of W
        self.w = nn.ParameterDict(
            {s: nn.Parameter(torch.randn(dim, a, generator=generator) * std) for s in ("user", "item")}
        )
        self.b = nn.ParameterDict({s: nn.Parameter(torch.zeros(a)) for s in ("user", "item")})
        self.h = nn.ParameterDict({s: nn.Parameter(torch.full((a,), 0.01)) for s in ("user", "item")})

    def forward(self, x: torch.Tensor, side: str) -> tuple[torch.Tensor, torch.Tensor]:
        if self.transfer:
            x = torch.einsum("bkd,kde->bke", x, self.trans_w) + self.trans_b  # ẽ^k = W_t^k e^k + b_t^k
        logits = torch.relu(x @ self.w[side] + self.b[side]) @ self.h[side]  # hᵀ ReLU(W ẽ^k + b): (B, K)
        alpha = torch.softmax(logits, dim=1)
        return (alpha.unsqueeze(-1) * x).sum(1), alpha


class RecEraser(ShardedUnlearner):
    """RecEraser behind the Unlearner contract. ``info`` of ``forget`` names the retrained shards."""

    name = "receraser"

    def __init__(self, config: RecEraserConfig = RecEraserConfig(), seed: int = 0):
        super().__init__(config, seed)

    def _make_partition(self, model: TrainedModel, train: Interactions) -> Partition:
        ue, ie = model.embeddings()  # the pre-trained embeddings of the model being unlearned
        c = self.config
        return partition_interactions(
            train, c.partition, c.num_shards, ue, ie, slack=c.slack, iters=c.kmeans_iters, seed=self.seed
        )

    def _aggregate(self, shard_emb: np.ndarray, graph: Graph, shard_degree: np.ndarray):
        c = self.config
        device = graph.device
        x = torch.from_numpy(np.ascontiguousarray(shard_emb.transpose(1, 0, 2))).to(device)  # (N, K, d)
        if c.mask_unseen:
            x = x * torch.from_numpy(shard_degree.T > 0).to(device).unsqueeze(-1)
        nu = graph.num_users
        gen = torch.Generator().manual_seed(self.seed)
        agg = AttentionAggregator(x.shape[1], x.shape[2], c.attention_size, c.transfer, gen).to(device)
        train = graph.interactions

        def loss_fn(users, pos, neg):
            # aggregate each distinct node of the batch once (a batch repeats users and items)
            uu, inv_u = torch.unique(users, return_inverse=True)
            ii, inv_i = torch.unique(torch.cat([pos, neg]), return_inverse=True)
            u = agg(x[uu], "user")[0][inv_u]
            items = agg(x[nu + ii], "item")[0][inv_i]
            i, j = items[: len(pos)], items[len(pos) :]
            return bpr_loss((u * i).sum(-1), (u * j).sum(-1))

        hist = (
            bpr_epochs(
                loss_fn,
                list(agg.parameters()),
                train,
                None,
                c.agg_epochs,
                c.agg_lr,
                c.agg_batch_size,
                self.seed,
                device,
            )
            if len(train)
            else []
        )
        with torch.no_grad():
            parts, weights = [], []
            for side, lo, hi in (("user", 0, nu), ("item", nu, x.shape[0])):
                for s in range(lo, hi, 8192):
                    out, alpha = agg(x[s : min(s + 8192, hi)], side)
                    parts.append(out)
                    weights.append(alpha)
        allx = torch.cat(parts)
        alpha = torch.cat(weights)
        info = {
            "agg_loss": hist[-1] if hist else None,
            "mean_attention": [round(float(v), 4) for v in alpha.mean(0).cpu()],
        }
        return allx[:nu], allx[nu:], info
