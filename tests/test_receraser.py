"""RecEraser: the Unlearner contract, SISA retraining, the attention aggregator."""

from __future__ import annotations

import pytest
import torch

from tests.contracts import UnlearnerContract
from tests.test_partition import ShardedUnlearnerChecks
from unlearnrec.errors import ConfigError
from unlearnrec.unlearn.registry import build_method
from unlearnrec.unlearn.sharded.receraser import AttentionAggregator, RecEraser, RecEraserConfig

SMALL = {"num_shards": 4, "shard_epochs": 8, "agg_epochs": 4, "batch_size": 128, "agg_lr": 1e-2}


class TestRecEraser(ShardedUnlearnerChecks, UnlearnerContract):
    def make(self, seed: int = 0):
        return build_method("receraser", SMALL, seed=seed)


@pytest.mark.parametrize("kind", ["user", "item", "random"])
def test_other_partitions_forget(kind, tiny):
    from unlearnrec.backbones import build_backbone
    from unlearnrec.data.graph import Graph
    from unlearnrec.model import TrainedModel
    from unlearnrec.unlearn.base import Request

    bb = build_backbone("lightgcn", tiny.num_users, tiny.num_items, {"dim": 8, "layers": 1})
    model = TrainedModel(bb, Graph.from_interactions(tiny), "lightgcn")
    u = RecEraser(RecEraserConfig(**{**SMALL, "partition": kind, "shard_epochs": 1, "agg_epochs": 1}))
    u.prepare(model, tiny)
    req = Request.of_edges(tiny, tiny.users[:2], tiny.items[:2])
    res = u.forget(model, tiny, req)
    assert res.model.train.intersects(req.edges) == 0
    assert 1 <= len(res.info["retrained_shards"]) <= 2


def test_attention_weights_are_a_distribution():
    agg = AttentionAggregator(3, 6, generator=torch.Generator().manual_seed(0))
    x = torch.randn(5, 3, 6)
    out, alpha = agg(x, "user")
    assert out.shape == (5, 6) and alpha.shape == (5, 3)
    assert torch.allclose(alpha.sum(1), torch.ones(5))
    # W_t starts at the identity: with equal attention the output is the mean of the shards
    assert torch.allclose(out, (alpha.unsqueeze(-1) * x).sum(1), atol=1e-6)
    out.sum().backward()
    assert agg.w["user"].grad is not None and agg.h["user"].grad is not None and agg.w["item"].grad is None


def test_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="unknown RecEraser partition"):
        build_method("receraser", {"partition": "blpa"})
    with pytest.raises(ConfigError):
        build_method("receraser", {"num_shards": 0})
    with pytest.raises(ConfigError, match="unknown config key"):
        build_method("receraser", {"shards": 3})
    assert RecEraserConfig().num_shards == 10
