"""GraphEraser: the Unlearner contract, SISA retraining, learned shard weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.test_partition import ShardedUnlearnerChecks
from unlearnrec.errors import ConfigError
from unlearnrec.unlearn.grapheraser import GraphEraserConfig
from unlearnrec.unlearn.registry import build_method

SMALL = {"num_shards": 4, "shard_epochs": 8, "agg_epochs": 4, "batch_size": 128, "agg_sample": 0.5}


class TestGraphEraserBLPA(ShardedUnlearnerChecks):
    def make(self, seed: int = 0):
        return build_method("grapheraser", SMALL, seed=seed)

    def test_edges_follow_their_user(self, trained, prepared):
        p = prepared._partition
        assert np.array_equal(p.edge_shard, p.unit_shard[trained.train.users])

    def test_served_scores_are_the_weighted_shard_scores(self, prepared):
        # ŷ = Σ_k w_k ē_u^k · ē_i^k, served as concatenated √w-scaled embeddings of width K·d
        u, i = prepared.prepared_model.embeddings()
        k = prepared.config.num_shards
        w = torch.tensor(prepared.prepare_info["shard_weights"])
        assert u.shape[1] == k * 8 and abs(float(w.sum()) - 1) < 1e-3
        x = torch.from_numpy(np.stack(prepared._shard_emb))  # (K, N, d)
        nu = u.shape[0]
        deg = np.zeros((k, x.shape[1]), bool)
        tr = prepared._train
        deg[prepared._partition.edge_shard, tr.users] = True
        deg[prepared._partition.edge_shard, tr.items + nu] = True
        x = x * torch.from_numpy(deg).unsqueeze(-1)
        ref = torch.einsum("k,kud,kid->ui", w, x[:, :nu], x[:, nu:])
        assert torch.allclose(u @ i.T, ref, atol=1e-3)


class TestGraphEraserBEKM(ShardedUnlearnerChecks):
    def make(self, seed: int = 0):
        return build_method("grapheraser", {**SMALL, "partition": "bekm"}, seed=seed)


def test_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="unknown GraphEraser partition"):
        build_method("grapheraser", {"partition": "user"})
    with pytest.raises(ConfigError, match="agg_sample"):
        build_method("grapheraser", {"agg_sample": 0.0})
    assert GraphEraserConfig().num_shards == 10
