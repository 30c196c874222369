"""Conformance tests every backbone (``BackboneContract``) and every unlearner (``UnlearnerContract``)
inherits in two lines. A backbone:

    class TestMyNet(BackboneContract):
        def make(self, num_users, num_items, generator):
            return MyNet(num_users, num_items, MyNetConfig(dim=8), generator=generator)

Set ``has_ssl = True`` on the subclass when the loss has a self-supervised term. Everything runs on the
60-user / 40-item planted-cluster graph of ``conftest.tiny``; no test takes more than a fraction of a second.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unlearnrec.backbones.base import Backbone, Batch
from unlearnrec.data.graph import Graph
from unlearnrec.data.sampling import bpr_batches
from unlearnrec.data.synthetic import planted_clusters

NU, NI = 60, 40


class BackboneContract:
    """Mixin of conformance tests; subclasses implement :meth:`make`."""

    has_ssl = False

    def make(self, num_users: int, num_items: int, generator: torch.Generator) -> Backbone:
        raise NotImplementedError

    # -- fixtures ------------------------------------------------------------------------------------
    @pytest.fixture
    def graph(self) -> Graph:
        return Graph.from_interactions(planted_clusters(NU, NI, clusters=4, seed=0))

    @pytest.fixture
    def batch(self, graph) -> Batch:
        """All training edges of the tiny graph, one negative each (seeded)."""
        return next(bpr_batches(graph.interactions, 10**6, np.random.default_rng(0)))

    def model(self, seed: int = 0) -> Backbone:
        return self.make(NU, NI, torch.Generator().manual_seed(seed))

    # -- the contract --------------------------------------------------------------------------------
    def test_embed_shapes(self, graph):
        m = self.model()
        u, i = m.embed(graph)
        assert u.shape == (NU, m.dim) and i.shape == (NI, m.dim)
        assert torch.isfinite(u).all() and torch.isfinite(i).all()
        assert m.e0.shape == (NU + NI, m.dim)

    def test_loss_terms(self, graph, batch):
        terms = self.model().loss(graph, batch, generator=torch.Generator().manual_seed(1))
        expected = {"bpr", "reg", "total"} | ({"ssl"} if self.has_ssl else set())
        assert set(terms) == expected
        for v in terms.values():
            assert v.dim() == 0 and torch.isfinite(v)
        parts = sum(v for k, v in terms.items() if k != "total")
        assert torch.allclose(terms["total"], parts)
        if self.has_ssl:
            assert terms["ssl"].item() > 0

    def test_gradients_reach_layer0(self, graph, batch):
        m = self.model()
        m.loss(graph, batch, generator=torch.Generator().manual_seed(1))["total"].backward()
        g = m.e0.grad
        assert g is not None and torch.isfinite(g).all()
        touched = torch.unique(torch.cat([batch.users, NU + batch.pos, NU + batch.neg]))
        assert (g[touched].abs().sum(1) > 0).all()

    def test_external_e0_is_used(self, graph, batch):
        m = self.model()
        before = m.e0.detach().clone()
        u, i = m.embed(graph, torch.zeros_like(m.e0))
        assert torch.count_nonzero(u) == 0 and torch.count_nonzero(i) == 0
        e0 = m.e0.detach() + 0.05 * torch.randn(m.e0.shape, generator=torch.Generator().manual_seed(3))
        e0.requires_grad_(True)
        u2, _ = m.embed(graph, e0)
        assert not torch.allclose(u2, m.embed(graph)[0])
        # the loss too: gradients go to the supplied table, not to the module's
        m.loss(graph, batch, e0=e0, generator=torch.Generator().manual_seed(1))["total"].backward()
        assert e0.grad is not None and e0.grad.abs().sum() > 0
        assert m.e0.grad is None
        assert torch.equal(m.e0.detach(), before)

    def test_loss_goes_down(self, graph, batch):
        m = self.model()
        opt = torch.optim.Adam(m.parameters(), lr=0.05)
        gen = torch.Generator().manual_seed(5)
        m.on_epoch_start(graph, gen)
        losses = []
        for _ in range(40):
            loss = m.loss(graph, batch, generator=gen)["total"]
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert np.isfinite(losses).all()
        assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])

    def test_fixed_seed_identical_losses(self, graph, batch):
        def run():
            m = self.model(seed=7)
            opt = torch.optim.Adam(m.parameters(), lr=0.01)
            gen = torch.Generator().manual_seed(11)
            out = []
            for step in range(3):
                if step == 1:
                    m.on_epoch_start(graph, gen)
                loss = m.loss(graph, batch, generator=gen)["total"]
                opt.zero_grad()
                loss.backward()
                opt.step()
                out.append(loss.item())
            return out

        assert run() == run()

    def test_eval_needs_no_generator(self, graph):
        m = self.model()
        with torch.no_grad():
            a = m.embed(graph)
            b = m.embed(graph)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


# ============================================================================ Unlearner contract
def tiny_trained_model(name: str = "lightgcn", epochs: int = 5, seed: int = 0, dim: int = 16):
    """A tiny LightGCN-style model trained on 60 users x 40 items (planted clusters), for contracts."""
    from unlearnrec.backbones import build_backbone
    from unlearnrec.config import to_dict
    from unlearnrec.data.graph import Graph
    from unlearnrec.data.synthetic import planted_clusters
    from unlearnrec.model import TrainedModel
    from unlearnrec.train.loop import TrainConfig, fit

    train = planted_clusters(60, 40, clusters=4, seed=seed)
    graph = Graph.from_interactions(train)
    backbone = build_backbone(
        name, train.num_users, train.num_items, {"dim": dim}, generator=torch.Generator().manual_seed(seed)
    )
    tcfg = TrainConfig(epochs=epochs, batch_size=256, lr=1e-2, eval_every=1, patience=0, seed=seed)
    res = fit(backbone, graph, tcfg)
    return TrainedModel(
        backbone, graph, name, meta={"train_config": to_dict(tcfg), "best_epoch": res.best_epoch}
    )


class UnlearnerContract:
    """Conformance tests every Unlearner inherits in two lines::

        class TestMine(UnlearnerContract):
            def make_method(self, seed=0): return Mine(MineConfig(...), seed=seed)

    Subclasses may override the class-scoped ``trained_model`` fixture (default: a tiny LightGCN
    on planted clusters) and ``request_size``. Each test calls ``prepare`` then ``forget``.
    """

    request_size = 12

    def make_method(self, seed: int = 0):
        raise NotImplementedError

    @pytest.fixture(scope="class")
    @classmethod
    def trained_model(cls):
        return tiny_trained_model()

    # -------------------------------------------------------------------- helpers
    def make_request(self, model, seed: int = 0):
        from unlearnrec.unlearn.base import Request

        train = model.train
        rng = np.random.default_rng(seed)
        idx = np.sort(rng.choice(len(train), size=min(self.request_size, len(train) // 4), replace=False))
        return Request.of_edges(train, train.users[idx], train.items[idx])

    def run_method(self, model, request, seed: int = 0):
        method = self.make_method(seed=seed)
        method.prepare(model, model.train)
        return method.forget(model, model.train, request)

    # -------------------------------------------------------------------- the contract
    def test_returns_result_with_new_model(self, trained_model):
        from unlearnrec.model import TrainedModel
        from unlearnrec.unlearn.base import Result

        res = self.run_method(trained_model, self.make_request(trained_model))
        assert isinstance(res, Result)
        assert isinstance(res.model, TrainedModel)
        assert res.model is not trained_model
        assert res.model.backbone is not trained_model.backbone
        assert res.seconds >= 0 and res.peak_memory_mb >= 0

    def test_empty_request_changes_nothing(self, trained_model):
        from unlearnrec.data.interactions import Interactions
        from unlearnrec.unlearn.base import Request

        train = trained_model.train
        empty = Request(Interactions.empty(train.num_users, train.num_items))
        res = self.run_method(trained_model, empty)
        assert res.model.train.fingerprint() == train.fingerprint()
        ue0, ie0 = trained_model.embeddings()
        ue1, ie1 = res.model.embeddings()
        torch.testing.assert_close(ue1, ue0, rtol=0, atol=1e-6)
        torch.testing.assert_close(ie1, ie0, rtol=0, atol=1e-6)

    def test_inputs_not_mutated(self, trained_model):
        import copy
        import json

        model = trained_model
        request = self.make_request(model, seed=1)
        state = {k: v.detach().clone() for k, v in model.backbone.state_dict().items()}
        adj_vals = model.graph.adj.values().clone()
        train_print = model.train.fingerprint()
        req_print = request.edges.fingerprint()
        meta = json.dumps(model.meta, sort_keys=True, default=str)
        fu, fi = copy.deepcopy(model.forgotten_users), copy.deepcopy(model.forgotten_items)
        self.run_method(model, request)
        for k, v in model.backbone.state_dict().items():
            assert torch.equal(v, state[k]), f"input model's {k} was modified"
        assert torch.equal(model.graph.adj.values(), adj_vals)
        assert model.train.fingerprint() == train_print
        assert request.edges.fingerprint() == req_print
        assert json.dumps(model.meta, sort_keys=True, default=str) == meta
        assert np.array_equal(model.forgotten_users, fu) and np.array_equal(model.forgotten_items, fi)

    def test_id_space_kept(self, trained_model):
        res = self.run_method(trained_model, self.make_request(trained_model))
        new = res.model
        assert new.train.num_users == trained_model.train.num_users
        assert new.train.num_items == trained_model.train.num_items
        ue, ie = new.embeddings()
        ue0, ie0 = trained_model.embeddings()
        assert ue.shape == ue0.shape and ie.shape == ie0.shape
        assert new.graph.adj.shape == trained_model.graph.adj.shape

    def test_no_forgotten_edge_remains(self, trained_model):
        request = self.make_request(trained_model)
        new = self.run_method(trained_model, request).model
        e = request.edges
        assert not new.train.contains(e.users, e.items).any()
        assert len(new.train) == len(trained_model.train) - len(e)
        # the propagation graph has no entry for a forgotten edge either
        adj = new.graph.adj.to_sparse_coo().coalesce()
        rows, cols = adj.indices().cpu().numpy()
        n = adj.shape[0]
        present = set((rows * n + cols).tolist())
        nu = new.train.num_users
        for u, i in zip(e.users.tolist(), e.items.tolist(), strict=True):
            assert u * n + (i + nu) not in present and (i + nu) * n + u not in present

    def test_fixed_seed_is_deterministic(self, trained_model):
        request = self.make_request(trained_model, seed=2)
        a = self.run_method(trained_model, request, seed=3).model.embeddings()
        b = self.run_method(trained_model, request, seed=3).model.embeddings()
        torch.testing.assert_close(a[0], b[0], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(a[1], b[1], rtol=1e-6, atol=1e-6)
