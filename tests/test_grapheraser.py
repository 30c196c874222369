"""GraphEraser: the Unlearner contract, SISA retraining, learned shard weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.contracts import UnlearnerContract
from tests.test_partition import ShardedUnlearnerChecks
from unlearnrec.errors import ConfigError
from unlearnrec.unlearn.registry import build_method
from unlearnrec.unlearn.sharded.grapheraser import GraphEraserConfig

SMALL = {"num_shards": 4, "shard_epochs": 8, "agg_epochs": 4, "batch_size": 128, "agg_sample": 0.5}


class _GraphEraserChecks(ShardedUnlearnerChecks, UnlearnerContract):
    def test_id_space_kept(self, trained_model):
        # Overrides the contract's check: the rows (ids) are kept, but the served embeddings are
        # K·d wide by construction (concatenated √w-scaled shard embeddings, the exact form of
        # GraphEraser's weighted sum of shard scores), not d wide like the input model's.
        res = self.run_method(trained_model, self.make_request(trained_model))
        new = res.model
        assert new.train.same_space(trained_model.train)
        ue, ie = new.embeddings()
        ue0, ie0 = trained_model.embeddings()
        k = self.make(0).config.num_shards
        assert ue.shape == (ue0.shape[0], k * ue0.shape[1]) and ie.shape == (ie0.shape[0], k * ie0.shape[1])
        assert new.graph.adj.shape == trained_model.graph.adj.shape


class TestGraphEraserBLPA(_GraphEraserChecks):
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


class TestGraphEraserBEKM(_GraphEraserChecks):
    def make(self, seed: int = 0):
        return build_method("grapheraser", {**SMALL, "partition": "bekm"}, seed=seed)


def test_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="unknown GraphEraser partition"):
        build_method("grapheraser", {"partition": "user"})
    with pytest.raises(ConfigError, match="agg_sample"):
        build_method("grapheraser", {"agg_sample": 0.0})
    assert GraphEraserConfig().num_shards == 10
