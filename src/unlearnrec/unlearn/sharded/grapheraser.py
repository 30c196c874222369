"""GraphEraser (Chen et al., "Graph Unlearning", CCS 2022) adapted to BPR recommenders.

1. Balanced node partition of the user-item graph: BLPA (balanced label propagation) or BEKM
   (balanced k-means on the model's pre-trained node embeddings), see :mod:`.partition`.
   (choice) Every edge goes to the shard of its *user*: GraphEraser keeps only intra-shard edges,
   which on a bipartite interaction graph would drop most of them.
2. One sub-model per shard (same backbone and config as the model), trained from scratch.
3. Learning-based aggregation (GraphEraser's LBAggr): one weight per shard,
   w = softmax(θ), ŷ_ui = Σ_k w_k ē_u^k · ē_i^k, θ learnt with BPR on a random sample of the
   training edges (GraphEraser uses a sample of training nodes; ``agg_sample`` here).
4. Forgetting retrains the shards holding a forgotten edge and re-learns θ.

The weighted sum of shard scores is exactly a dot product of concatenated, √w-scaled shard
embeddings, ŷ_ui = [√w_k ē_u^k]_k · [√w_k ē_i^k]_k, so the ensemble is served as a
:class:`~.partition.FixedEmbedding` of width K·d through the ordinary ``TrainedModel``.
(choice) ``mask_unseen`` (default on): a shard's embedding of a node with no edge in that shard is
zeroed. In GraphEraser a shard model still sees an unseen node's features; here such a node only
has its random initial row, and its score would be pure noise.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from unlearnrec.config import check_ranges
from unlearnrec.data.graph import Graph
from unlearnrec.data.interactions import Interactions
from unlearnrec.errors import ConfigError
from unlearnrec.losses import bpr_loss
from unlearnrec.model import TrainedModel
from unlearnrec.unlearn.sharded.base import SHARD_RANGES, ShardedUnlearner
from unlearnrec.unlearn.sharded.partition import (
    GRAPHERASER_KINDS,
    Partition,
    check_sharded_config,
    partition_interactions,
)
from unlearnrec.unlearn.sharded.pool import bpr_epochs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GraphEraserConfig:
    """GraphEraser's knobs.

    partition: "blpa" or "bekm". slack: balance cap ceil(n/K)·(1+slack) on users and on items.
    partition_iters: BLPA / BEKM rounds. agg_sample: fraction of training edges for learning θ.
    shard_epochs, lr, batch_size: training of each sub-model; agg_epochs, agg_lr, agg_batch_size: of θ.
    workers: processes training shards in parallel (torch threads are split between them).
    """

    num_shards: int = 10
    partition: str = "blpa"
    partition_iters: int = 30
    slack: float = 0.2
    shard_epochs: int = 50
    agg_epochs: int = 20
    lr: float = 1e-2
    agg_lr: float = 1e-2
    batch_size: int = 2048
    agg_batch_size: int = 4096
    workers: int = 1
    agg_sample: float = 0.1
    mask_unseen: bool = True

    RANGES = {
        "num_shards": "[1, 10000]",
        "partition_iters": "[1, 100000]",
        **SHARD_RANGES,
        "agg_sample": "(0, 1]",
    }

    def __post_init__(self):
        check_ranges(self)
        check_sharded_config(self, GRAPHERASER_KINDS, "GraphEraser", "partition_iters")
        if not 0 < self.agg_sample <= 1:
            raise ConfigError(f"agg_sample must be in (0, 1], got {self.agg_sample}")


class GraphEraser(ShardedUnlearner):
    """GraphEraser behind the Unlearner contract. ``info`` of ``forget`` names the retrained shards."""

    name = "grapheraser"

    def __init__(self, config: GraphEraserConfig = GraphEraserConfig(), seed: int = 0):
        super().__init__(config, seed)

    def _make_partition(self, model: TrainedModel, train: Interactions) -> Partition:
        c = self.config
        ue = ie = None
        if c.partition == "bekm":
            ue, ie = model.embeddings()
        return partition_interactions(
            train, c.partition, c.num_shards, ue, ie, slack=c.slack, iters=c.partition_iters, seed=self.seed
        )

    def _aggregate(self, shard_emb: np.ndarray, graph: Graph, shard_degree: np.ndarray):
        c = self.config
        device = graph.device
        x = torch.from_numpy(np.ascontiguousarray(shard_emb.transpose(1, 0, 2))).to(device)  # (N, K, d)
        if c.mask_unseen:
            x = x * torch.from_numpy(shard_degree.T > 0).to(device).unsqueeze(-1)
        nu = graph.num_users
        k = x.shape[1]
        theta = torch.zeros(k, device=device, requires_grad=True)
        train = graph.interactions
        rng = np.random.default_rng(self.seed)
        n = len(train)
        sample = (
            np.sort(rng.choice(n, size=max(1, int(round(c.agg_sample * n))), replace=False)) if n else None
        )

        def loss_fn(users, pos, neg):
            w = torch.softmax(theta, 0)
            u = x[users]
            sp = ((u * x[nu + pos]).sum(-1) * w).sum(-1)  # ŷ_ui = Σ_k w_k ē_u^k · ē_i^k
            sn = ((u * x[nu + neg]).sum(-1) * w).sum(-1)
            return bpr_loss(sp, sn)

        hist = (
            bpr_epochs(
                loss_fn, [theta], train, sample, c.agg_epochs, c.agg_lr, c.agg_batch_size, self.seed, device
            )
            if n
            else []
        )
        with torch.no_grad():
            w = torch.softmax(theta, 0)
            scaled = (x * w.sqrt()[None, :, None]).reshape(x.shape[0], -1)  # [√w_k ē^k]_k: (N, K·d)
        info = {
            "agg_loss": hist[-1] if hist else None,
            "shard_weights": [round(float(v), 4) for v in w.cpu()],
        }
        return scaled[:nu], scaled[nu:], info
