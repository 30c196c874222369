"""Balanced partitions (RecEraser InBP/UBP/IBP, GraphEraser BLPA/BEKM), shard training, FixedEmbedding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unlearnrec.backbones.fixed import FixedEmbedding
from unlearnrec.data.graph import Graph
from unlearnrec.data.interactions import Interactions
from unlearnrec.data.synthetic import planted_clusters
from unlearnrec.errors import ConfigError
from unlearnrec.unlearn.sharded.partition import (
    PARTITION_KINDS,
    balance_cap,
    balanced_assign,
    partition_interactions,
)
from unlearnrec.unlearn.sharded.pool import ShardJob, shard_seed, train_shards


def _emb(train: Interactions, d: int = 8, seed: int = 0):
    g = np.random.default_rng(seed)
    return g.normal(size=(train.num_users, d)), g.normal(size=(train.num_items, d))


# ----------------------------------------------------------------------------- balanced_assign
def test_balance_cap():
    assert balance_cap(100, 10, 0.2) == 12
    assert balance_cap(101, 10, 0.0) == 11
    assert balance_cap(5, 10, 0.2) == 2  # ceil(1 · 1.2)


def test_balanced_assign_fills_nearest_first():
    # all four points prefer shard 0; cap 2: the two closest stay, the others go to shard 1
    dist = np.array([[0.4, 5.0], [0.1, 5.0], [0.3, 5.0], [0.2, 6.0]])
    assert balanced_assign(dist, cap=2).tolist() == [1, 0, 1, 0]


def test_balanced_assign_without_binding_cap_is_argmin():
    dist = np.random.default_rng(0).random((50, 4))
    assert np.array_equal(balanced_assign(dist, cap=50), dist.argmin(1))


def test_balanced_assign_respects_cap_and_covers():
    dist = np.random.default_rng(1).random((103, 7)) ** 3
    dist[:, 0] -= 1  # everyone wants shard 0
    cap = balance_cap(103, 7, 0.1)
    lab = balanced_assign(dist, cap)
    assert lab.min() >= 0 and lab.max() < 7
    assert np.bincount(lab, minlength=7).max() <= cap
    assert np.bincount(lab, minlength=7)[0] == cap


def test_balanced_assign_refuses_impossible():
    with pytest.raises(ConfigError):
        balanced_assign(np.zeros((10, 2)), cap=4)


# ----------------------------------------------------------------------------- partitions
@pytest.mark.parametrize("kind", PARTITION_KINDS)
def test_partition_covers_every_edge_once_within_cap(tiny, kind):
    ue, ie = _emb(tiny)
    p = partition_interactions(tiny, kind, 4, ue, ie, slack=0.2, seed=0)
    assert p.edge_shard.shape == (len(tiny),)
    assert p.edge_shard.min() >= 0 and p.edge_shard.max() < 4
    assert p.shard_sizes().sum() == len(tiny)
    counts = np.bincount(p.unit_shard[p.unit_shard >= 0], minlength=4)
    assert counts.max() <= p.cap
    assert (counts > 0).all()
    if p.item_shard is not None:
        assert np.bincount(p.item_shard, minlength=4).max() <= p.item_cap
    # shards of a user-based partition follow the user
    if p.unit in ("user", "node"):
        assert np.array_equal(p.edge_shard, p.unit_shard[tiny.users])
    if p.unit == "item":
        assert np.array_equal(p.edge_shard, p.unit_shard[tiny.items])


@pytest.mark.parametrize("kind", PARTITION_KINDS)
def test_partition_deterministic_for_a_seed(tiny, kind):
    ue, ie = _emb(tiny)
    a = partition_interactions(tiny, kind, 3, ue, ie, seed=5)
    b = partition_interactions(tiny, kind, 3, torch.as_tensor(ue), torch.as_tensor(ie), seed=5)
    assert np.array_equal(a.edge_shard, b.edge_shard)


def test_user_kmeans_recovers_separated_clusters():
    # users of two far-apart embedding blobs; cap = half: each shard is one blob
    train = planted_clusters(40, 20, clusters=2, seed=0)
    g = np.random.default_rng(0)
    ue = g.normal(scale=0.01, size=(40, 4)) + np.where((np.arange(40) % 2)[:, None] == 0, 5.0, -5.0)
    ie = g.normal(size=(20, 4))
    p = partition_interactions(train, "user", 2, ue, ie, slack=0.0, seed=0)
    lab = p.unit_shard
    assert len(set(lab[0::2])) == 1 and len(set(lab[1::2])) == 1 and lab[0] != lab[1]


def test_blpa_finds_disconnected_communities():
    # two disconnected bipartite communities: BLPA ends with each in its own shard
    train = planted_clusters(40, 20, clusters=2, p_in=0.6, p_out=0.0, seed=0)
    p = partition_interactions(train, "blpa", 2, slack=0.0, iters=30, seed=0)
    cu = np.arange(40) % 2
    agree = (p.unit_shard == cu).mean()
    assert agree in (0.0, 1.0)  # a perfect split, up to the labels' names
    # no edge crosses the communities, so all edges of a shard belong to one community
    assert all(len(set(cu[train.users[p.edge_shard == k]])) == 1 for k in range(2))


def test_partition_errors(tiny):
    ue, ie = _emb(tiny)
    with pytest.raises(ConfigError, match="unknown partition kind"):
        partition_interactions(tiny, "metis", 4, ue, ie)
    with pytest.raises(ConfigError, match="needs pre-trained"):
        partition_interactions(tiny, "interaction", 4)
    with pytest.raises(ConfigError):
        partition_interactions(tiny, "user", 1000, ue, ie)


# ----------------------------------------------------------------------------- shard training
def _jobs(tiny, n=2):
    return [
        ShardJob(
            k,
            tiny.users[k::n],
            tiny.items[k::n],
            tiny.num_users,
            tiny.num_items,
            "lightgcn",
            {"dim": 8, "layers": 1},
            3,
            1e-2,
            64,
            shard_seed(0, k),
        )
        for k in range(n)
    ]


def test_train_shards_deterministic_and_learns(tiny):
    a = train_shards(_jobs(tiny), workers=1)
    b = train_shards(_jobs(tiny), workers=1)
    assert len(a) == 2 and a[0].shape == (tiny.num_users + tiny.num_items, 8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.allclose(a[0], a[1])  # different shards, different seeds
    assert shard_seed(0, 1) == shard_seed(0, 1) != shard_seed(1, 1)


@pytest.mark.slow
def test_train_shards_in_processes_matches_serial(tiny):
    a = train_shards(_jobs(tiny), workers=1)
    b = train_shards(_jobs(tiny), workers=2)
    assert all(np.allclose(x, y, atol=1e-5) for x, y in zip(a, b, strict=True))


def test_fixed_embedding_serves_stored_rows(tiny):
    ue, ie = torch.randn(tiny.num_users, 5), torch.randn(tiny.num_items, 5)
    fe = FixedEmbedding.from_embeddings(ue, ie)
    u, i = fe.embed(Graph.from_interactions(tiny))
    assert torch.equal(u, ue) and torch.equal(i, ie)
    assert not fe.e0.requires_grad


# ----------------------------------------------------------------------------- shared unlearner checks
class ShardedUnlearnerChecks:
    """Unlearner conformance + SISA checks, inherited by the RecEraser and GraphEraser tests.

    Subclasses define ``make(seed)`` -> a fresh unlearner (4 shards, a few epochs) and also inherit
    ``tests/contracts.py``'s ``UnlearnerContract`` (empty request changes nothing, inputs not
    mutated, id space kept, no forgotten edge left, deterministic for a seed).
    """

    def make(self, seed: int = 0):
        raise NotImplementedError

    @pytest.fixture(scope="class")
    @classmethod
    def trained(cls):
        from unlearnrec.backbones import build_backbone
        from unlearnrec.model import TrainedModel
        from unlearnrec.train.loop import TrainConfig, fit

        train = planted_clusters(48, 32, clusters=4, seed=1)
        graph = Graph.from_interactions(train)
        bb = build_backbone(
            "lightgcn", 48, 32, {"dim": 8, "layers": 2}, generator=torch.Generator().manual_seed(0)
        )
        fit(bb, graph, TrainConfig(epochs=15, batch_size=128, lr=2e-2, patience=0))
        return TrainedModel(bb, graph, "lightgcn", meta={"tag": "original"})

    @pytest.fixture(scope="class")
    @classmethod
    def prepared(cls, trained):
        u = cls().make(0)
        u.prepare(trained, trained.train)
        return u

    @staticmethod
    def request(train, n=4, seed=0):
        from unlearnrec.unlearn.base import Request

        pick = np.random.default_rng(seed).choice(len(train), size=n, replace=False)
        return Request.of_edges(train, train.users[pick], train.items[pick])

    @pytest.fixture(scope="class")
    @classmethod
    def recorded(cls, trained, prepared):
        """forget() of a 4-edge request, recording every shard job it trains."""
        import unlearnrec.unlearn.sharded.pool as part

        jobs = []
        orig = part.train_one_shard

        def spy(job):
            jobs.append(job)
            return orig(job)

        mp = pytest.MonkeyPatch()
        mp.setattr(part, "train_one_shard", spy)
        try:
            req = cls.request(trained.train)
            res = prepared.forget(trained, trained.train, req)
        finally:
            mp.undo()
        return req, res, jobs

    # -- beyond tests/contracts.py's UnlearnerContract (inherited by the test classes) ----------------
    def make_method(self, seed: int = 0):
        return self.make(seed)

    def test_empty_request_retrains_nothing(self, trained, prepared):
        from unlearnrec.unlearn.base import Request

        empty = Request(Interactions.empty(trained.train.num_users, trained.train.num_items))
        res = prepared.forget(trained, trained.train, empty)
        assert res.info["retrained_shards"] == []
        assert res.model is not trained and res.model.backbone is not trained.backbone

    def test_id_space_kept_and_edges_gone(self, trained, recorded):
        req, res, _ = recorded
        new = res.model
        assert new.train.same_space(trained.train)
        assert new.train.intersects(req.edges) == 0
        assert len(new.train) == len(trained.train) - len(req)
        u, i = new.embeddings()
        assert u.shape[0] == trained.train.num_users and i.shape[0] == trained.train.num_items
        assert torch.isfinite(u).all() and torch.isfinite(i).all()
        assert res.seconds > 0 and new.meta["lineage"][-1]["method"] == prepared_name(self)

    # -- SISA ---------------------------------------------------------------------------------------
    def test_only_affected_shards_retrained_without_forgotten_edges(self, trained, prepared, recorded):
        req, res, jobs = recorded
        pos = trained.train.locate(req.edges)
        affected = sorted(set(prepared._partition.edge_shard[pos].tolist()))
        assert res.info["retrained_shards"] == affected
        assert sorted(j.shard for j in jobs) == affected
        assert len(affected) < prepared.config.num_shards or len(req) >= prepared.config.num_shards
        for j in jobs:
            shard = Interactions(j.users, j.items, j.num_users, j.num_items)
            assert shard.intersects(req.edges) == 0  # a forgotten edge is in no retrained shard
            expected = prepared.shard_training_edges(j.shard, req.edges)
            assert shard.fingerprint() == expected.fingerprint()  # exactly the shard's remaining edges

    def test_cumulative_request_treats_earlier_edges_as_forgotten(self, trained, prepared, recorded):
        req, _, _ = recorded
        residual = trained.train.drop(req.edges)
        req2 = self.request(residual, n=2, seed=9)
        res = prepared.forget(trained, residual, req2)
        both = req.edges.union(req2.edges)
        assert res.model.train.intersects(both) == 0
        shards = set(prepared._partition.edge_shard[trained.train.locate(both)].tolist())
        assert set(res.info["retrained_shards"]) == shards

    def test_forget_whole_user(self, trained, prepared):
        from unlearnrec.errors import UnlearnRecError
        from unlearnrec.unlearn.base import Request

        req = Request.of_users(trained.train, [3])
        res = prepared.forget(trained, trained.train, req)
        assert (res.model.train.users != 3).all()
        assert torch.count_nonzero(res.model.backbone.e0[3]) == 0
        with pytest.raises(UnlearnRecError):
            res.model.recommend([3])

    def test_ensemble_learns_the_clusters(self, prepared):
        m = prepared.prepared_model
        u, i = m.embeddings()
        scores = u @ i.T
        cu = np.arange(u.shape[0]) % 4
        ci = np.arange(i.shape[0]) % 4
        same = torch.from_numpy(cu[:, None] == ci[None, :])
        assert scores[same].mean() > scores[~same].mean()

    def test_prepared_cache_round_trip(self, tmp_path, trained, prepared, recorded):
        req, res, _ = recorded
        assert prepared.save_prepared(tmp_path / "cache")
        other = self.make(0)
        assert other.load_prepared(tmp_path / "cache", trained)
        assert torch.equal(other.prepared_model.backbone.e0, prepared.prepared_model.backbone.e0)
        again = other.forget(trained, trained.train, req)
        assert torch.allclose(res.model.backbone.e0, again.model.backbone.e0, atol=1e-6)
        assert not self.make(1).load_prepared(tmp_path / "cache", trained)  # another seed: not usable

    def test_saved_ensemble_loads_and_serves_the_same_scores(self, tmp_path, recorded):
        from unlearnrec.backbones import BACKBONES
        from unlearnrec.model import TrainedModel

        _, res, _ = recorded
        res.model.save(tmp_path / "ens")
        back = TrainedModel.load(tmp_path / "ens")
        assert back.backbone_name == "fixed" and "fixed" not in BACKBONES  # loadable, not trainable
        for a, b in zip(back.embeddings(), res.model.embeddings(), strict=True):
            assert torch.equal(a, b)


def prepared_name(checks: ShardedUnlearnerChecks) -> str:
    return type(checks.make(0)).name


@pytest.mark.parametrize("method", ["receraser", "grapheraser"])
@pytest.mark.parametrize(
    "backbone,extra",
    [("sgl", {"keep": 0.8, "ssl_weight": 0.1}), ("simgcl", {"eps": 0.3, "ssl_weight": 0.1})],
)
def test_shards_are_the_unlearned_backbone(tiny, monkeypatch, method, backbone, extra):
    """The sub-models of a self-supervised model are that backbone, with its own settings (not LightGCN)."""
    import unlearnrec.unlearn.sharded.pool as part
    from unlearnrec.backbones import build_backbone
    from unlearnrec.model import TrainedModel
    from unlearnrec.unlearn.base import Request
    from unlearnrec.unlearn.registry import build_method

    cfg = {"dim": 8, "layers": 2, **extra}
    bb = build_backbone(
        backbone, tiny.num_users, tiny.num_items, cfg, generator=torch.Generator().manual_seed(0)
    )
    model = TrainedModel(bb, Graph.from_interactions(tiny), backbone)
    jobs = []
    orig = part.train_one_shard
    monkeypatch.setattr(part, "train_one_shard", lambda job: (jobs.append(job), orig(job))[1])
    u = build_method(method, {"num_shards": 3, "shard_epochs": 2, "agg_epochs": 1, "batch_size": 64}, seed=0)
    u.prepare(model, tiny)
    assert len(jobs) == 3
    assert {j.backbone for j in jobs} == {backbone}
    assert all(all(j.backbone_config[k] == v for k, v in cfg.items()) for j in jobs)
    jobs.clear()
    req = Request.of_edges(tiny, tiny.users[:3], tiny.items[:3])
    res = u.forget(model, tiny, req)
    assert jobs and {j.backbone for j in jobs} == {backbone}
    assert all(
        Interactions(j.users, j.items, j.num_users, j.num_items).intersects(req.edges) == 0 for j in jobs
    )
    assert res.model.train.intersects(req.edges) == 0
    ue, ie = res.model.embeddings()
    assert torch.isfinite(ue).all() and torch.isfinite(ie).all()
