"""``fit``: the loss goes down, early stopping keeps the best state, NaN stops clearly, seeds repeat."""

from __future__ import annotations

import pytest
import torch

from unlearnrec.backbones.lightgcn import LightGCN, LightGCNConfig
from unlearnrec.data.graph import Graph, propagate
from unlearnrec.errors import TrainingError
from unlearnrec.eval.ranking import evaluate_embeddings
from unlearnrec.losses import bpr_loss
from unlearnrec.train.loop import TrainConfig, fit


def _model(train, seed: int = 0) -> LightGCN:
    return LightGCN(
        train.num_users,
        train.num_items,
        LightGCNConfig(dim=16, layers=2),
        generator=torch.Generator().manual_seed(seed),
    )


def test_loss_goes_down_and_validation_beats_random(tiny_split):
    train, val, _ = tiny_split
    graph = Graph.from_interactions(train)
    model = _model(train)
    with torch.no_grad():
        before = evaluate_embeddings(*model.embed(graph), val, exclude=[train], ks=(5,))["recall@5"]
    res = fit(model, graph, TrainConfig(epochs=15, batch_size=64, lr=0.02, eval_every=5, patience=0), val=val)
    losses = [r["total"] for r in res.history]
    assert losses[-1] < 0.7 * losses[0]
    assert res.epochs_run == 15 and len(res.history) == 15
    assert res.best_metric > before + 0.1


def test_early_stopping_restores_the_best_state(tiny_split):
    train, val, _ = tiny_split
    graph = Graph.from_interactions(train)
    model = _model(train)
    fit(model, graph, TrainConfig(epochs=10, batch_size=64, lr=0.02, patience=0), val=val)
    states = {}

    def anti_bpr(batch, gen):  # ascends the BPR loss: every epoch makes the ranking worse
        out = model.propagate(graph, model.e0)
        u, i, j = out[batch.users], out[model.num_users + batch.pos], out[model.num_users + batch.neg]
        loss = -bpr_loss((u * i).sum(-1), (u * j).sum(-1))
        return {"bpr": loss, "total": loss}

    def keep(row):
        states[row["epoch"]] = model.e0.detach().clone()

    cfg = TrainConfig(epochs=30, batch_size=64, lr=0.05, eval_every=1, patience=2)
    res = fit(model, graph, cfg, val=val, loss_fn=anti_bpr, on_epoch=keep)
    assert res.epochs_run < cfg.epochs  # stopped early
    assert res.epochs_run == res.best_epoch + cfg.patience
    assert not torch.equal(states[res.epochs_run], states[res.best_epoch])
    assert torch.equal(model.e0.detach(), states[res.best_epoch])  # the best state, not the last
    with torch.no_grad():
        now = evaluate_embeddings(*model.embed(graph), val, exclude=[train], ks=(20,))
    assert now["recall@20"] == pytest.approx(res.best_metric)


def test_nan_loss_raises_a_clear_training_error(tiny_split):
    train, val, _ = tiny_split
    graph = Graph.from_interactions(train)
    model = _model(train)

    def nan_loss(batch, gen):
        t = model.e0.sum() * float("nan")
        return {"bpr": t, "total": t}

    with pytest.raises(TrainingError, match=r"loss became nan at epoch 1.*learning rate"):
        fit(model, graph, TrainConfig(epochs=3, batch_size=64), val=val, loss_fn=nan_loss)


def test_seeded_runs_are_identical_and_seeds_matter(tiny_split):
    train, val, _ = tiny_split
    graph = Graph.from_interactions(train)
    runs = []
    for seed in (3, 3, 4):
        model = _model(train)
        cfg = TrainConfig(epochs=4, batch_size=50, lr=0.01, eval_every=2, seed=seed)
        res = fit(model, graph, cfg, val=val)
        runs.append((model.e0.detach().clone(), [r["total"] for r in res.history]))
    assert torch.equal(runs[0][0], runs[1][0]) and runs[0][1] == runs[1][1]
    assert not torch.equal(runs[0][0], runs[2][0])


def test_propagate_is_twice_differentiable():
    """GIF/CEU take Hessian-vector products through the propagation: check the double backward."""
    idx = torch.tensor([[0, 1, 1, 2, 2, 3], [1, 0, 2, 1, 3, 2]])
    adj = torch.sparse_coo_tensor(idx, torch.tensor([0.5, 0.5, 0.3, 0.3, 0.7, 0.7]), (4, 4)).to_sparse_csr()
    adj64 = adj.to(torch.float64)
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: propagate(adj64, propagate(adj64, v)).pow(2).sum(), (x,))
    assert torch.autograd.gradgradcheck(lambda v: propagate(adj64, v).pow(3).sum(), (x,))


def test_threads_setting_is_scoped_to_the_call(tiny_split):
    train, _, _ = tiny_split
    graph = Graph.from_interactions(train)
    before = torch.get_num_threads()
    seen = []
    fit(
        _model(train),
        graph,
        TrainConfig(epochs=1, batch_size=64, threads=2),
        on_epoch=lambda row: seen.append(torch.get_num_threads()),
    )
    assert seen == [2] and torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads"):
        TrainConfig(threads=-1)


def test_lr_decay_multiplies_the_rate_every_epoch(tiny_split, monkeypatch):
    train, _, _ = tiny_split
    graph = Graph.from_interactions(train)
    rates = []
    real_step = torch.optim.Adam.step

    def spy(self, *a, **k):
        rates.append(self.param_groups[0]["lr"])
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.Adam, "step", spy)
    fit(_model(train), graph, TrainConfig(epochs=3, batch_size=10_000, lr=0.1, lr_decay=0.5))
    assert rates == pytest.approx([0.1, 0.05, 0.025])
    with pytest.raises(ValueError, match="lr_decay"):
        TrainConfig(lr_decay=0.0)


def test_propagate_equals_the_dense_product_with_empty_rows():
    """The product writes into an uninitialised output: rows without entries must still be 0."""
    from unlearnrec.data.graph import normalized_adjacency

    adj = normalized_adjacency([0, 0, 2], [1, 2, 2], num_users=4, num_items=3)  # user 1, 3, item 0 isolated
    x = torch.randn(7, 5)
    dense = adj.to_dense() @ x
    with torch.no_grad():
        assert torch.allclose(propagate(adj, x), dense, atol=1e-6)
    xg = x.clone().requires_grad_(True)
    y = propagate(adj, xg)
    assert torch.allclose(y, dense, atol=1e-6)
    y.sum().backward()
    assert torch.allclose(xg.grad, adj.to_dense() @ torch.ones(7, 5), atol=1e-6)
    assert not torch.isnan(y).any() and (y[1] == 0).all() and (y[4] == 0).all()
