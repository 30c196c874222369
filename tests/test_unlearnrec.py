"""UnlearnRec at the level of its equations (docs/method.md §2-5), its contract, persistence and CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from tests.conftest import run_cli, three_edge
from tests.contracts import UnlearnerContract, tiny_trained_model
from unlearnrec.backbones import BACKBONES
from unlearnrec.config import from_dict
from unlearnrec.data.interactions import Interactions
from unlearnrec.data.sampling import bpr_batches
from unlearnrec.errors import ConfigError, RequestError, UnlearnRecError
from unlearnrec.losses import holding_loss, unlearning_loss
from unlearnrec.model import TrainedModel
from unlearnrec.unlearn.base import Request
from unlearnrec.unlearn.registry import build_method
from unlearnrec.unlearn.unlearnrec import (
    IdentityMLP,
    InfluenceEncoder,
    UnlearnRec,
    UnlearnRecConfig,
    build_idm,
    dropped_idm,
    local_idm,
    prior_request,
)
from unlearnrec.unlearn.unlearnrec import finetune as finetune_module
from unlearnrec.unlearn.unlearnrec import guard as guard_module
from unlearnrec.unlearn.unlearnrec.finetune import RowMLP, step_terms
from unlearnrec.unlearn.unlearnrec.guard import validation_recall
from unlearnrec.unlearn.unlearnrec.pretrain import auxiliary_terms, copy_backbone, final_embeddings

FAST = dict(epochs=2, batch_size=256, steps_per_epoch=3, lr=1e-2)


def fast(**kw) -> UnlearnRecConfig:
    return UnlearnRecConfig(**{**FAST, **kw})


def dense(adj: torch.Tensor) -> np.ndarray:
    return adj.to_dense().numpy().astype(np.float64)


def request_of(model: TrainedModel, size: int, seed: int) -> Request:
    train = model.train
    idx = np.sort(np.random.default_rng(seed).choice(len(train), size=size, replace=False))
    return Request.of_edges(train, train.users[idx], train.items[idx])


def randomised(enc: InfluenceEncoder, seed: int = 0) -> InfluenceEncoder:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        enc.h0.copy_(torch.randn(enc.h0.shape, generator=g) * 0.1)
        enc.eta.copy_(torch.rand(enc.eta.shape, generator=g))
    return enc


@pytest.fixture(scope="module")
def model() -> TrainedModel:
    return tiny_trained_model(epochs=8)


@pytest.fixture(scope="module")
def prepared(model) -> UnlearnRec:
    m = UnlearnRec(fast(), seed=0)
    m.prepare(model, model.train)
    return m


# ============================================================================ §2 the IDM
def test_idm_three_edge_hand_computed():
    # edges (0,0), (0,1), (1,1); nodes u0=0, u1=1, i0=2, i1=3; degrees u0 2, u1 1, i0 1, i1 2
    a = dense(build_idm(three_edge()))
    r2, h = 1 / math.sqrt(2), 0.5
    expected = np.array([[0, 0, r2, h], [0, 0, 0, r2], [r2, 0, 0, 0], [h, r2, 0, 0]])
    np.testing.assert_allclose(a, expected, atol=1e-6)


def test_idm_counts_degrees_inside_the_request_only():
    train = three_edge()
    req = Request.of_edges(train, [0, 0], [0, 1])  # u0 has degree 2 in the IDM, u1 is isolated
    a = dense(build_idm(req.edges))
    r2 = 1 / math.sqrt(2)
    expected = np.array([[0, 0, r2, r2], [0, 0, 0, 0], [r2, 0, 0, 0], [r2, 0, 0, 0]])
    np.testing.assert_allclose(a, expected, atol=1e-6)
    assert np.isfinite(a).all()


def test_dropped_view_keeps_full_normalisation_scaled():
    edges = tiny_trained_model(epochs=0).train
    full = dense(build_idm(edges))
    np.testing.assert_allclose(
        dense(dropped_idm(edges, 1.0, torch.Generator().manual_seed(0))), full, atol=1e-6
    )
    view = dense(dropped_idm(edges, 0.5, torch.Generator().manual_seed(0)))
    kept = view != 0
    assert 0.3 < kept.sum() / (full != 0).sum() < 0.7
    np.testing.assert_allclose(view[kept], full[kept] / 0.5, rtol=1e-5)
    np.testing.assert_array_equal(view, view.T)  # whole edges dropped: still symmetric


# ============================================================================ §3 the encoder
def test_mlp_is_identity_on_positive_inputs():
    mlp = IdentityMLP(8)
    x = torch.rand(50, 8) + 0.01
    torch.testing.assert_close(mlp(x), x)
    neg = -torch.rand(5, 8) - 0.01
    torch.testing.assert_close(mlp(neg), neg * 0.99**2)


def test_zero_h0_and_eta_change_nothing(model):
    enc = InfluenceEncoder(model.graph.num_nodes, model.backbone.dim, eta_init=0.0)
    req = request_of(model, 10, 0)
    e0 = model.backbone.e0.detach()
    out = enc(build_idm(req.edges), e0, final_embeddings(model.backbone, model.graph))
    assert torch.equal(out, e0)


def test_delta_matches_equations_15_to_17_densely(model):
    enc = randomised(InfluenceEncoder(model.graph.num_nodes, model.backbone.dim, layers=3, alpha=0.1))
    req = request_of(model, 15, 1)
    idm = build_idm(req.edges)
    a = torch.from_numpy(dense(idm)).float()
    e_bar = final_embeddings(model.backbone, model.graph)
    h = [enc.h0.detach()]
    for _ in range(3):
        h.append(a @ h[-1])  # Eq. 15
    w = enc.eta.detach() * e_bar
    for _ in range(3):
        w = a @ w  # Eq. 16
    with torch.no_grad():
        torch.testing.assert_close(enc.delta(idm, e_bar), sum(h) - 0.1 * w, atol=1e-5, rtol=1e-4)  # Eq. 17
        enc.readout = "last"
        torch.testing.assert_close(enc.delta(idm, e_bar), h[-1] - 0.1 * w, atol=1e-5, rtol=1e-4)
        enc.readout, enc.readout_layer0 = "sum", False
        torch.testing.assert_close(enc.delta(idm, e_bar), sum(h[1:]) - 0.1 * w, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("readout, layer0", [("sum", True), ("sum", False), ("last", True)])
def test_local_serving_equals_full_forward(model, readout, layer0):
    # Ours(0) propagates only the request's rows (local_idm); it must equal Eq. 15-18 on all N rows
    enc = randomised(InfluenceEncoder(model.graph.num_nodes, 16, readout=readout, readout_layer0=layer0))
    req = request_of(model, 12, 9)
    e0, e_bar = model.backbone.e0.detach(), final_embeddings(model.backbone, model.graph)
    nodes, sub = local_idm(req.edges)
    assert len(nodes) == len(np.unique(req.edges.users)) + len(np.unique(req.edges.items))
    with torch.no_grad():
        full = enc.delta(build_idm(req.edges), e_bar)
        torch.testing.assert_close(enc.delta_full(nodes, sub, e_bar), full, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(enc.serve(nodes, sub, e0, e_bar), enc(build_idm(req.edges), e0, e_bar))


@pytest.mark.parametrize("layer0, untouched", [(False, True), (True, False)])
def test_nodes_outside_request_untouched_without_layer0(model, layer0, untouched):
    method = UnlearnRec(UnlearnRecConfig(readout_layer0=layer0))
    method.encoder = randomised(method.new_encoder(model))
    req = request_of(model, 10, 2)
    new = method.forget(model, model.train, req).model
    nu = model.train.num_users
    inside = np.zeros(model.graph.num_nodes, bool)
    inside[np.concatenate([req.edges.users, req.edges.items + nu])] = True
    e0, e1 = model.backbone.e0.detach(), new.backbone.e0.detach()
    assert torch.equal(e1[~inside], e0[~inside]) == untouched
    assert not torch.allclose(e1[inside], e0[inside])  # the request's nodes did move


@pytest.mark.parametrize("layer0", [True, False])
def test_influence_on_items_leaves_request_users_as_untouched_nodes(model, layer0):
    # the variant: the request's users get what an untouched node gets, the items get Eq. 15-17
    method = UnlearnRec(UnlearnRecConfig(influence_on="items", readout_layer0=layer0))
    method.encoder = randomised(method.new_encoder(model))
    both = randomised(UnlearnRec(UnlearnRecConfig(readout_layer0=layer0)).new_encoder(model))
    req = request_of(model, 12, 4)
    nu = model.train.num_users
    users = np.unique(req.edges.users)
    items = np.unique(req.edges.items) + nu
    e0, e_bar = model.backbone.e0.detach(), final_embeddings(model.backbone, model.graph)
    new = method.forget(model, model.train, req).model.backbone.e0.detach()
    base = method.encoder.base(e0)
    torch.testing.assert_close(new[users], base[users])  # users: as untouched nodes
    assert torch.equal(new[users], e0[users]) == (not layer0)
    with torch.no_grad():
        full = both(build_idm(req.edges), e0, e_bar)
    torch.testing.assert_close(new[items], full[items])  # items: exactly Eq. 15-18
    assert not torch.allclose(new[items], e0[items])
    # local serving still equals the full forward under the variant
    nodes, sub = local_idm(req.edges)
    with torch.no_grad():
        torch.testing.assert_close(
            method.encoder.delta_full(nodes, sub, e_bar), method.encoder.delta(build_idm(req.edges), e_bar)
        )


def test_hub_mask_picks_the_endpoint_with_more_request_edges():
    from unlearnrec.unlearn.unlearnrec.encoder import hub_mask

    # user 0 - items 0, 1, 2 (a user with 3 request edges); item 3 - users 1, 2 (an item with 2);
    # user 3 - item 4 alone (a tie: both ends). Users 0..3, items 4..8 as nodes (item j = 4 + j).
    edges = Interactions.from_pairs([0, 0, 0, 1, 2, 3], [0, 1, 2, 3, 3, 4], 5, 6)
    got = hub_mask(build_idm(edges)).tolist()
    users, items = got[:5], got[5:]
    assert users == [True, False, False, True, False]  # user 0 (3 > 1), user 3 (tie); not users 1, 2
    assert items == [False, False, False, True, True, False]  # item 3 (2 > 1), item 4 (tie)
    assert not hub_mask(build_idm(Interactions.from_pairs([], [], 5, 6))).any()


def test_influence_on_hubs_moves_only_the_hubs_and_serves_locally(model):
    from unlearnrec.unlearn.unlearnrec.encoder import hub_mask

    method = UnlearnRec(UnlearnRecConfig(influence_on="hubs"))
    method.encoder = randomised(method.new_encoder(model))
    both = randomised(UnlearnRec(UnlearnRecConfig()).new_encoder(model))
    req = request_of(model, 12, 4)
    idm = build_idm(req.edges)
    hubs = hub_mask(idm)
    request_nodes = torch.zeros_like(hubs)
    request_nodes[
        torch.from_numpy(np.concatenate([req.edges.users, req.edges.items + model.train.num_users]))
    ] = True
    assert hubs.any() and (request_nodes & ~hubs).any()  # this request has both kinds
    e0, e_bar = model.backbone.e0.detach(), final_embeddings(model.backbone, model.graph)
    new = method.forget(model, model.train, req).model.backbone.e0.detach()
    base = method.encoder.base(e0)
    quiet = request_nodes & ~hubs
    torch.testing.assert_close(new[quiet], base[quiet])  # as untouched nodes
    with torch.no_grad():
        full = both(idm, e0, e_bar)
    torch.testing.assert_close(new[hubs], full[hubs])  # hubs: exactly Eq. 15-18
    nodes, sub = local_idm(req.edges)
    with torch.no_grad():
        torch.testing.assert_close(
            method.encoder.delta_full(nodes, sub, e_bar), method.encoder.delta(idm, e_bar)
        )


def test_influence_on_items_round_trips_and_is_validated(model, tmp_path):
    m = UnlearnRec(fast(influence_on="items"), seed=0)
    m.prepare(model, model.train)
    m.save_prepared(tmp_path / "ie")
    back = UnlearnRec.from_encoder(tmp_path / "ie", model)
    assert back.encoder.influence_on == "items" and back.encoder.num_users == model.train.num_users
    # an encoder pre-trained with the paper's rule is not reused for the variant
    assert not UnlearnRec(fast()).load_prepared(tmp_path / "ie", model)
    with pytest.raises(ValueError, match="influence_on"):
        UnlearnRecConfig(influence_on="users")
    with pytest.raises(ValueError, match="num_users"):
        InfluenceEncoder(10, 4, influence_on="items")


def test_idm_norm_graph_weighs_an_edge_by_the_training_degrees(model):
    # idm_norm = "graph": Â_Δ[u, i] = 1/sqrt(d_u d_i) with the training graph's degrees
    tr = model.train
    du, di = np.bincount(tr.users, minlength=tr.num_users), np.bincount(tr.items, minlength=tr.num_items)
    req = request_of(model, 9, 5)
    a = dense(build_idm(req.edges, degrees=(du, di)))
    nu = tr.num_users
    for u, i in zip(req.edges.users, req.edges.items, strict=True):
        assert a[u, nu + i] == pytest.approx(1 / math.sqrt(du[u] * di[i]), rel=1e-6)
        assert a[nu + i, u] == a[u, nu + i]
    assert np.count_nonzero(a) == 2 * len(req.edges)
    # the local (request-rows) IDM and the serving path agree with the full one
    method = UnlearnRec(UnlearnRecConfig(idm_norm="graph"))
    method.encoder = randomised(method.new_encoder(model))
    e0, e_bar = model.backbone.e0.detach(), final_embeddings(model.backbone, model.graph)
    nodes, sub = local_idm(req.edges, degrees=(du, di))
    with torch.no_grad():
        full = method.encoder(build_idm(req.edges, degrees=(du, di)), e0, e_bar)
        torch.testing.assert_close(method.encoder.serve(nodes, sub, e0, e_bar), full)
    new = method.forget(model, tr, req).model.backbone.e0.detach()
    torch.testing.assert_close(new, full)
    # a dropped view keeps the graph normalisation, scaled by 1/keep
    view = dense(dropped_idm(req.edges, 0.5, torch.Generator().manual_seed(0), degrees=(du, di)))
    kept = view != 0
    np.testing.assert_allclose(view[kept], 2 * a[kept], rtol=1e-6)
    with pytest.raises(ValueError, match="idm_norm"):
        UnlearnRecConfig(idm_norm="both")


# ============================================================================ §4 losses
def test_unlearning_loss_step_lowers_forgotten_scores(model):
    enc = InfluenceEncoder(model.graph.num_nodes, model.backbone.dim)
    req = request_of(model, 12, 3)
    idm, residual = build_idm(req.edges), model.graph.residual(req.edges)
    e0, e_bar = model.backbone.e0.detach(), final_embeddings(model.backbone, model.graph)
    nu = model.train.num_users
    u, i = torch.tensor(req.edges.users), torch.tensor(req.edges.items + nu)

    def scores():
        out = model.backbone.propagate(residual, enc(idm, e0, e_bar))
        return (out[u] * out[i]).sum(-1)

    opt = torch.optim.SGD([enc.h0, enc.eta], lr=0.5)
    before = scores()
    loss = unlearning_loss(before)  # Eq. 20
    opt.zero_grad()
    loss.backward()
    opt.step()
    with torch.no_grad():
        after = scores()
    assert after.mean() < before.detach().mean() - 1e-3
    assert unlearning_loss(after) < loss


def test_pretraining_curve_and_ablation_switches(model):
    m = UnlearnRec(fast(epochs=3), seed=0)
    m.prepare(model, model.train)
    assert [h["epoch"] for h in m.history] == [1, 2, 3]
    assert {"model", "model_bpr", "unlearn", "preserve", "contrast", "total"} <= set(m.history[0])
    assert all(math.isfinite(h["total"]) for h in m.history)
    assert m.encoder.h0.abs().sum() > 0  # H⁰ was trained
    torch.testing.assert_close(m.encoder.mlp(torch.ones(3, 16)), torch.ones(3, 16))  # MLP frozen
    ab = UnlearnRec(fast(epochs=1, use_lu=False, use_lp=False, use_lc=False), seed=0)
    ab.prepare(model, model.train)
    assert not {"unlearn", "preserve", "contrast"} & set(ab.history[0])
    assert ab.history[0]["total"] == pytest.approx(ab.history[0]["model"])


def test_pretraining_lowers_forgotten_scores(model):
    # a longer pre-training with only L_model + L_u must make the IE push requests down
    m = UnlearnRec(
        fast(epochs=6, steps_per_epoch=0, use_lp=False, use_lc=False, lambda_u=1.0, lr=3e-2), seed=0
    )
    m.prepare(model, model.train)
    req = request_of(model, 20, 4)
    base = UnlearnRec(fast())
    base.encoder = base.new_encoder(model)  # untrained encoder: ~ the residual graph alone

    def mean_score(method):
        ue, ie = method.forget(model, model.train, req).model.embeddings()
        u, i = np.array(req.edges.users), np.array(req.edges.items)
        return float((ue[u] * ie[i]).sum(-1).mean())

    assert mean_score(m) < mean_score(base) - 0.005


def test_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="readout"):
        from_dict(UnlearnRecConfig, {"readout": "mean"}, "unlearnrec")
    with pytest.raises(ConfigError, match="unknown config key"):
        from_dict(UnlearnRecConfig, {"lambda_x": 1.0}, "unlearnrec")
    assert isinstance(build_method("unlearnrec", {"finetune_epochs": 2}), UnlearnRec)


# ============================================================================ §5 forgetting
class TestUnlearnRecContract(UnlearnerContract):
    def make_method(self, seed: int = 0):
        return UnlearnRec(fast(), seed=seed)


class TestUnlearnRecFinetuneContract(UnlearnerContract):
    def make_method(self, seed: int = 0):
        return UnlearnRec(fast(finetune_epochs=1), seed=seed)


def test_empty_request_raises_at_construction_but_forget_is_noop(model, prepared):
    with pytest.raises(RequestError, match="empty request"):
        Request.of_edges(model.train, [], [])
    res = prepared.forget(
        model, model.train, Request(Interactions.empty(model.train.num_users, model.train.num_items))
    )
    assert res.model is not model and res.model.backbone is not model.backbone
    assert torch.equal(res.model.backbone.e0, model.backbone.e0)
    assert res.model.train.fingerprint() == model.train.fingerprint()


def test_ours0_is_backbone_with_new_e0_on_residual_graph(model, prepared):
    req = request_of(model, 10, 5)
    new = prepared.forget(model, model.train, req).model
    enc = prepared.encoder
    with torch.no_grad():
        expected = enc(build_idm(req.edges), model.backbone.e0, final_embeddings(model.backbone, model.graph))
    torch.testing.assert_close(new.backbone.e0.detach(), expected)
    assert new.train.fingerprint() == model.train.drop(req.edges).fingerprint()
    np.testing.assert_allclose(dense(new.graph.adj), dense(model.graph.residual(req.edges).adj), atol=1e-6)
    assert new.meta["lineage"][-1]["method"] == "unlearnrec"


def test_no_pretraining_rows_start_from_the_residual_graph_exactly(model):
    """The grids' "No pre-training" rows (epochs = 0, eta_init = 0): Ours(0) is the input's E⁰ on Â_r,
    bit for bit, so their fine-tuning starts from the residual graph alone."""
    m = UnlearnRec(fast(epochs=0, eta_init=0.0), seed=0)
    m.prepare(model, model.train)
    req = request_of(model, 10, 7)
    new = m.forget(model, model.train, req).model
    assert torch.equal(new.backbone.e0.detach(), model.backbone.e0.detach())
    np.testing.assert_allclose(dense(new.graph.adj), dense(model.graph.residual(req.edges).adj), atol=1e-6)
    m.config = fast(epochs=0, eta_init=0.0, finetune_epochs=1)
    tuned = m.forget(model, model.train, req)
    assert tuned.info["finetune_steps_run"] > 0
    assert not torch.equal(tuned.model.backbone.e0.detach(), model.backbone.e0.detach())


def test_finetuning_changes_model_and_keeps_encoder(model, prepared):
    req = request_of(model, 10, 6)
    h0 = prepared.encoder.h0.clone()
    w = [p.clone() for p in prepared.encoder.mlp.parameters()]
    a = prepared.forget(model, model.train, req).model
    prepared.config = fast(finetune_epochs=2)
    try:
        res = prepared.forget(model, model.train, req)
    finally:
        prepared.config = fast()
    assert not torch.allclose(res.model.backbone.e0, a.backbone.e0)
    assert len(res.info["finetune_history"]) == 2
    assert torch.equal(prepared.encoder.h0, h0)  # H⁰ fixed during fine-tuning
    # the MLP is copied for fine-tuning, never trained in place
    assert all(torch.equal(p, q) for p, q in zip(prepared.encoder.mlp.parameters(), w, strict=True))


def test_fixed_seed_pretraining_is_identical(model):
    a, b = UnlearnRec(fast(), seed=5), UnlearnRec(fast(), seed=5)
    a.prepare(model, model.train)
    b.prepare(model, model.train)
    assert torch.equal(a.encoder.h0, b.encoder.h0) and torch.equal(a.encoder.eta, b.encoder.eta)
    c = UnlearnRec(fast(), seed=6)
    c.prepare(model, model.train)
    assert not torch.equal(a.encoder.h0, c.encoder.h0)


def test_epoch_checkpoints_equal_shorter_runs_and_change_nothing(model):
    """on_epoch's state after epoch 3 of a 5-epoch run is bit-identical to a plain 3-epoch run's
    encoder, and the 5-epoch run with the hook ends where it ends without it, even when the hook
    draws from the global RNG and forgets with the checkpoint (issue 21's pre-training study)."""
    seen: dict[int, dict[str, torch.Tensor]] = {}
    req = request_of(model, 6, 1)

    def hook(epoch, state, row):
        assert row["epoch"] == epoch
        seen[epoch] = {k: v.clone() for k, v in state.items()}
        torch.rand(3)  # the global RNG: restored after the hook
        ours = UnlearnRec.with_encoder(fast(epochs=epoch, finetune_epochs=1), state, model, seed=5)
        ours.forget(model, model.train, req)
        state["h0"].add_(1.0)  # a hook that writes into its copy changes nothing of the run

    long = UnlearnRec(fast(epochs=5), seed=5)
    long.on_epoch = hook
    long.prepare(model, model.train)
    assert sorted(seen) == [1, 2, 3, 4, 5]
    plain5 = UnlearnRec(fast(epochs=5), seed=5)
    plain5.prepare(model, model.train)
    for k, v in plain5.encoder.state_dict().items():
        assert torch.equal(long.encoder.state_dict()[k], v), k
    plain3 = UnlearnRec(fast(epochs=3), seed=5)
    plain3.prepare(model, model.train)
    for k, v in plain3.encoder.state_dict().items():
        assert torch.equal(seen[3][k], v), k
    assert not torch.equal(seen[3]["h0"], seen[5]["h0"])
    # the checkpoint serves exactly as the 3-epoch prepared method does
    ours = UnlearnRec.with_encoder(fast(epochs=3), seen[3], model, seed=5)
    a = ours.forget(model, model.train, req).model.backbone.e0
    b = plain3.forget(model, model.train, req).model.backbone.e0
    assert torch.equal(a, b)
    assert [r["epoch"] for r in long.history] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_backbone(name):
    m = tiny_trained_model(name, epochs=2)
    method = UnlearnRec(fast(epochs=1, steps_per_epoch=2, finetune_epochs=1), seed=0)
    method.prepare(m, m.train)
    req = request_of(m, 8, 0)
    new = method.forget(m, m.train, req).model
    assert new.backbone_name == name and type(new.backbone) is type(m.backbone)
    assert torch.isfinite(new.backbone.e0).all()
    assert not new.train.contains(req.edges.users, req.edges.items).any()


def test_whole_users_and_items_through_saved_model(model, prepared, tmp_path):
    users = np.array([3, 7])
    res = prepared.forget(model, model.train, Request.of_users(model.train, users))
    res.model.save(tmp_path / "u")
    m = TrainedModel.load(tmp_path / "u")
    assert torch.equal(m.backbone.e0[torch.as_tensor(users)], torch.zeros(2, model.backbone.dim))
    assert len(m.train.of_users(users)) == 0
    with pytest.raises(UnlearnRecError, match="forgotten"):
        m.recommend([3])
    items = np.array([1, 5])
    res = prepared.forget(model, model.train, Request.of_items(model.train, items))
    res.model.save(tmp_path / "i")
    m = TrainedModel.load(tmp_path / "i")
    top, _ = m.recommend(np.arange(model.train.num_users), k=model.train.num_items)
    scores = m.recommend(np.arange(model.train.num_users), k=model.train.num_items)[1]
    assert not np.isin(top[np.isfinite(scores)], items).any()


# ============================================================================ persistence
def test_save_load_prepared_round_trip(model, prepared, tmp_path):
    assert UnlearnRec(fast()).save_prepared(tmp_path / "none") is False
    assert prepared.save_prepared(tmp_path / "ie")
    other = UnlearnRec(fast())
    assert other.load_prepared(tmp_path / "missing", model) is False
    assert other.load_prepared(tmp_path / "ie", model)
    req = request_of(model, 10, 7)
    a = prepared.forget(model, model.train, req).model.backbone.e0
    b = other.forget(model, model.train, req).model.backbone.e0
    assert torch.equal(a, b)
    assert other.history == prepared.history
    # another pre-training config: not reusable (the runner's cache must re-prepare)
    assert UnlearnRec(fast(lambda_u=0.123)).load_prepared(tmp_path / "ie", model) is False
    # but a serving field may differ
    assert UnlearnRec(fast(finetune_epochs=3)).load_prepared(tmp_path / "ie", model)
    stranger = tiny_trained_model(seed=1)
    with pytest.raises(UnlearnRecError, match="another model"):
        UnlearnRec.from_encoder(tmp_path / "ie", stranger)
    assert UnlearnRec(fast()).load_prepared(tmp_path / "ie", stranger) is False


def test_forget_without_encoder_is_a_clear_error(model):
    with pytest.raises(UnlearnRecError, match="prepare"):
        UnlearnRec(fast()).forget(model, model.train, request_of(model, 5, 0))


# ============================================================================ second request
def test_cumulative_equals_one_merged_request(model, prepared):
    first, train = request_of(model, 10, 8), model.train
    current = prepared.forget(model, train, first).model
    rest = current.train
    idx = np.arange(0, len(rest), 17)[:6]
    second = Request.of_edges(rest, rest.users[idx], rest.items[idx])
    prior = prior_request(model, current)
    assert prior.edges.fingerprint() == first.edges.fingerprint()
    cum = prepared.forget_cumulative(model, current, second)
    merged = prepared.forget(model, train, first.merge(second))
    assert torch.equal(cum.model.backbone.e0, merged.model.backbone.e0)
    assert cum.model.train.fingerprint() == train.drop(first.edges.union(second.edges)).fingerprint()
    lineage = cum.model.meta["lineage"]
    assert len(lineage) == 2 and lineage[-1]["cumulative"] and lineage[-1]["edges_total"] == 16
    # sequential: from the unlearned model directly
    seq = prepared.forget(current, current.train, second).model
    assert len(seq.train) == len(train) - 16 and len(seq.meta["lineage"]) == 2
    with pytest.raises(UnlearnRecError, match="not derived"):
        prior_request(current, model)


# ============================================================================ CLI
run = run_cli


@pytest.fixture
def cli_model(tmp_path, tiny_dir, capsys):
    m, ie = tmp_path / "m0", tmp_path / "ie"
    code, _, err = run(
        capsys, "train", "--dataset", tiny_dir, "--epochs", 8, "--dim", 8, "--lr", 0.05, "--out", m, "-q"
    )
    assert code == 0, err
    cfg = tmp_path / "ie.toml"
    cfg.write_text("[unlearnrec]\nbatch_size = 128\nsteps_per_epoch = 2\nlr = 0.01\n")
    code, out, err = run(
        capsys, "pretrain", "--model", m, "--epochs", 2, "--config", cfg, "--out", ie, "--json"
    )
    assert code == 0, err
    res = json.loads(out)
    assert len(res["history"]) == 2 and (ie / "loss_curve.json").is_file()
    return m, ie


def test_cli_forget_edges_users_items_and_second_request(cli_model, tmp_path, capsys):
    m0, ie = cli_model
    model = TrainedModel.load(m0)
    tr = model.train
    f1 = tmp_path / "e1.csv"
    f1.write_text(f"user,item\n{tr.users[0]},{tr.items[0]}\n{tr.users[5]},{tr.items[5]}\n")
    code, out, err = run(
        capsys,
        "forget",
        "--model",
        m0,
        "--method",
        "unlearnrec",
        "--encoder",
        ie,
        "--edges",
        f1,
        "--out",
        tmp_path / "m1",
        "--json",
    )
    assert code == 0, err
    r = json.loads(out)
    assert r["edges"] == 2 and r["seconds"] > 0 and 0 <= r["test"]["recall@20"] <= 1
    assert r["mi_bf"] > 0 and r["mi_ng"] > 0
    # second request: cumulative against the original, with fine-tuning
    f2 = tmp_path / "e2.txt"
    f2.write_text(f"{tr.users[9]} {tr.items[9]}\n")
    code, out, err = run(
        capsys,
        "forget",
        "--model",
        tmp_path / "m1",
        "--encoder",
        ie,
        "--edges",
        f2,
        "--original",
        m0,
        "--finetune-epochs",
        1,
        "--out",
        tmp_path / "m2",
        "--json",
    )
    assert code == 0, err
    m2 = TrainedModel.load(tmp_path / "m2")
    assert len(m2.train) == len(tr) - 3 and m2.meta["lineage"][-1]["cumulative"]
    # whole users: no recommendations; whole items: never recommended
    code, out, err = run(
        capsys, "forget", "--model", m0, "--encoder", ie, "--user", 2, 4, "--out", tmp_path / "mu"
    )
    assert code == 0 and "MI-BF" in out, err
    code, _, err = run(capsys, "recommend", "--model", tmp_path / "mu", "--user", 2)
    assert code == 2 and "forgotten" in err
    code, _, err = run(
        capsys, "forget", "--model", m0, "--encoder", ie, "--item", 3, "--out", tmp_path / "mi"
    )
    assert code == 0, err
    for u in range(0, tr.num_users, 7):
        code, out, _ = run(capsys, "recommend", "--model", tmp_path / "mi", "--user", u, "-k", 40, "--json")
        assert code == 0 and 3 not in json.loads(out)["items"]


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "empty request file"),
        ("0 0\n0 0\n", "duplicate edge"),
        ("99999 0\n", "unknown user id 99999"),
        ("0 99999\n", "unknown item id 99999"),
        ("FIRST_NON_EDGE", "not in the training set"),
        ("0 x\n", "ids must be integers"),
    ],
)
def test_cli_bad_requests_one_line(cli_model, tmp_path, capsys, content, message):
    m0, ie = cli_model
    if content == "FIRST_NON_EDGE":
        tr = TrainedModel.load(m0).train
        u, i = next(
            (u, i) for u in range(tr.num_users) for i in range(tr.num_items) if not tr.contains([u], [i])[0]
        )
        content = f"{u} {i}\n"
    elif content == "0 0\n0 0\n":
        tr = TrainedModel.load(m0).train
        content = f"{tr.users[0]} {tr.items[0]}\n" * 2
    f = tmp_path / "req.txt"
    f.write_text(content)
    code, _, err = run(
        capsys, "forget", "--model", m0, "--encoder", ie, "--edges", f, "--out", tmp_path / "x"
    )
    assert code == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_cli_forget_needs_encoder(cli_model, tmp_path, capsys):
    m0, _ = cli_model
    code, _, err = run(capsys, "forget", "--model", m0, "--user", 1, "--out", tmp_path / "x")
    assert code == 2 and "--encoder" in err


# ============================================================================ fine-tuning (issue 25)
def _two_propagation_step(backbone, residual, e0_tilde, batch, gen, forgotten, chunk, e_bar, config):
    """The former fine-tuning step: the backbone's loss (one propagation inside) and a second
    propagation for L_u / L_p."""
    terms = backbone.loss(residual, batch, e0=e0_tilde, generator=gen)
    total = terms["total"]
    out = backbone.propagate(residual, e0_tilde)
    aux = auxiliary_terms(out, residual.num_users, batch, forgotten, chunk, e_bar, config)
    total = total + config.lambda_u * aux["unlearn"] + config.lambda_p * aux["preserve"]
    return {**terms, **aux, "total": total}


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_shared_propagation_step_equals_two_propagation_step(name):
    m = tiny_trained_model(name, epochs=2)
    req = request_of(m, 12, 3)
    residual = m.graph.residual(req.edges)
    e_bar = final_embeddings(m.backbone, m.graph)
    cfg = fast(lambda_p=0.05)
    delta = torch.randn(m.graph.num_nodes, m.backbone.dim, generator=torch.Generator().manual_seed(1)) * 0.1
    batch = next(bpr_batches(residual.interactions, 64, np.random.default_rng(0)))
    chunk = np.arange(len(req.edges))
    results, grads = [], []
    for fn in (_two_propagation_step, step_terms):
        bb = copy_backbone(m.backbone)
        bb.train()
        mlp = IdentityMLP(bb.dim)
        e0_tilde = bb.e0 + mlp(delta)
        gen = torch.Generator().manual_seed(7)  # the SSL backbones' randomness, same stream for both
        terms = fn(bb, residual, e0_tilde, batch, gen, req.edges, chunk, e_bar, cfg)
        terms["total"].backward()
        results.append({k: float(v.detach()) for k, v in terms.items()})
        grads.append(bb.e0.grad.clone())
    old, new = results
    assert set(old) == set(new) and {"bpr", "unlearn", "preserve", "total"} <= set(new)
    for k in old:
        assert abs(old[k] - new[k]) <= 1e-6 * max(1.0, abs(old[k])), k
    torch.testing.assert_close(grads[1], grads[0], atol=1e-6, rtol=1e-5)


def test_finetuning_runs_one_propagation_per_step(model, prepared, monkeypatch):
    calls = []
    bb_type = type(model.backbone)
    original = bb_type.propagate

    def counting(self, graph, e0):
        calls.append(graph)
        return original(self, graph, e0)

    monkeypatch.setattr(bb_type, "propagate", counting)
    prepared.config = fast(finetune_epochs=2, finetune_batch_size=64, finetune_steps=3)
    try:
        res = prepared.forget(model, model.train, request_of(model, 10, 6))
    finally:
        prepared.config = fast()
    assert res.info["finetune_steps_run"] == 6  # 2 epochs x finetune_steps
    # one propagation per step on the residual graph (the others: Ē of the input model, on its own graph)
    assert sum(g is not model.graph for g in calls) == 6


def test_row_mlp_equals_mlp_on_all_rows_when_delta_is_zero_elsewhere():
    g = torch.Generator().manual_seed(0)
    mlp = IdentityMLP(8)
    with torch.no_grad():
        for p in mlp.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3)
    rows = torch.tensor([1, 4, 5])
    delta = torch.zeros(9, 8)
    delta[rows] = torch.randn(3, 8, generator=g)
    torch.testing.assert_close(RowMLP(mlp, delta, rows)(), mlp(delta))
    torch.testing.assert_close(RowMLP(mlp, delta, None)(), mlp(delta))
    assert not torch.allclose(mlp(delta)[0], torch.zeros(8))  # the bias really reaches untouched rows


def test_finetune_batch_size_and_steps(model, prepared):
    req = request_of(model, 10, 6)
    n_edges = len(model.train) - 10
    prepared.config = fast(finetune_epochs=1, finetune_batch_size=100)
    try:
        full = prepared.forget(model, model.train, req).info
        prepared.config = fast(finetune_epochs=2, finetune_batch_size=100, finetune_steps=2)
        capped = prepared.forget(model, model.train, req).info
    finally:
        prepared.config = fast()
    assert full["finetune_steps_run"] == math.ceil(n_edges / 100)
    assert capped["finetune_steps_run"] == 4 and [r["steps"] for r in capped["finetune_history"]] == [2, 2]


def test_stopping_rule_reads_validation_never_the_request(model, prepared, monkeypatch):
    """The rule's every evaluation ranks the validation split (the reference: the input model with
    its training set masked; the checks: the tuned model with the residual masked, which holds no
    request edge); and it stops early when reached."""
    req = request_of(model, 10, 6)
    rng = np.random.default_rng(3)
    users = rng.integers(0, model.train.num_users, 400)
    items = rng.integers(0, model.train.num_items, 400)
    keep = ~model.train.contains(users, items)
    val = Interactions.from_pairs(
        users[keep], items[keep], model.train.num_users, model.train.num_items, dedupe=True
    )
    seen = []
    real = guard_module.evaluate_embeddings

    def spy(user_emb, item_emb, target, exclude=(), **kw):
        seen.append((target, list(exclude)))
        return real(user_emb, item_emb, target, exclude=exclude, **kw)

    monkeypatch.setattr(guard_module, "evaluate_embeddings", spy)
    method = UnlearnRec(fast(finetune_epochs=3, finetune_stop_share=0.01, finetune_check_every=1), seed=0)
    method.encoder, method.prepared_for = prepared.encoder, prepared.prepared_for
    method.set_validation(val)
    res = method.forget(model, model.train, req)
    assert len(seen) >= 2, "the stopping rule never evaluated"
    assert all(target is val for target, _ in seen)  # only ever the validation split
    # first the reference, the input model's validation Recall with its own training set masked
    assert len(seen[0][1]) == 1 and seen[0][1][0] is model.train
    for _, exclude in seen[1:]:  # then the checks: the masked residual holds no forgotten edge
        assert len(exclude) == 1 and not exclude[0].contains(req.edges.users, req.edges.items).any()
    # a share of 1% of the input model's validation Recall is met by Ours(0) itself: no step taken,
    # and the model is Ours(0)'s
    assert res.info["finetune_stopped"] and res.info["finetune_steps_run"] == 0
    assert res.info["finetune_val_checks"][0][0] == 0
    ours0 = UnlearnRec(fast(), seed=0)
    ours0.encoder, ours0.prepared_for = prepared.encoder, prepared.prepared_for
    torch.testing.assert_close(res.model.backbone.e0, ours0.forget(model, model.train, req).model.backbone.e0)
    # an unreachable share runs every epoch
    method.config = fast(finetune_epochs=2, finetune_steps=2, finetune_stop_share=2.0)
    res = method.forget(model, model.train, req)
    assert not res.info["finetune_stopped"] and res.info["finetune_steps_run"] == 4
    assert [c[0] for c in res.info["finetune_val_checks"]] == [0, 2, 4]  # before, then once per epoch


def test_stopping_rule_is_built_without_the_request(model, prepared):
    method = UnlearnRec(fast(finetune_epochs=1, finetune_stop_share=0.9), seed=0)
    residual = model.graph.residual(request_of(model, 10, 6).edges)
    assert method._stop_rule(model, residual) is None  # no validation split: no rule
    users, items = np.arange(30), (np.arange(30) * 7) % model.train.num_items
    keep = ~model.train.contains(users, items)
    val = Interactions.from_pairs(users[keep], items[keep], model.train.num_users, model.train.num_items)
    method.set_validation(val)
    rule = method._stop_rule(model, residual)
    assert rule.val is val and rule.exclude[0] is residual.interactions
    assert rule.target == pytest.approx(0.9 * validation_recall(*model.embeddings(), val, [model.train]))


@pytest.mark.parametrize(
    "key,value",
    [
        ("finetune_batch_size", -1),
        ("finetune_steps", -2),
        ("finetune_check_every", -1),
        ("finetune_stop_share", 3.0),
    ],
)
def test_finetune_config_range_checks(key, value):
    with pytest.raises(ConfigError, match=key):
        from_dict(UnlearnRecConfig, {key: value}, "unlearnrec")


def test_every_finetune_and_forget_field_is_forget_only_in_grids():
    from unlearnrec.experiments.grid import FORGET_ONLY_FIELDS
    from unlearnrec.unlearn.unlearnrec.method import _PRETRAIN_FIELDS

    fields = {f for f in UnlearnRecConfig.__dataclass_fields__ if f.startswith(("finetune_", "forget_"))}
    assert set(FORGET_ONLY_FIELDS["unlearnrec"]) == fields
    assert not fields & set(_PRETRAIN_FIELDS)  # a cached encoder serves under any of them


def test_forget_rule_serves_a_both_encoder_under_hubs_and_shares_its_cache(model, tmp_path):
    """``forget_rule`` switches the rule at forget time only: the result equals an encoder pre-trained
    under "both" whose rule is set to "hubs" by hand, the encoder keeps its own rule afterwards, the
    saved encoder loads under any forget_rule, and a grid keys one prepared state for both."""
    from unlearnrec.experiments.grid import prepared_key

    base = UnlearnRec(fast(), seed=0)
    base.prepare(model, model.train)
    base.save_prepared(tmp_path / "ie")
    req = request_of(model, 12, 4)
    served = UnlearnRec.from_encoder(tmp_path / "ie", model, forget_rule="hubs")
    got = served.forget(model, model.train, req).model.backbone.e0.detach()
    assert served.encoder.influence_on == "both"  # restored after serving
    by_hand = UnlearnRec.from_encoder(tmp_path / "ie", model)
    by_hand.encoder.influence_on = "hubs"
    want = by_hand.forget(model, model.train, req).model.backbone.e0.detach()
    torch.testing.assert_close(got, want)
    plain = base.forget(model, model.train, req).model.backbone.e0.detach()
    assert not torch.allclose(got, plain)  # the rule did change the result
    again = UnlearnRec(fast(forget_rule="hubs"), seed=0)
    assert again.load_prepared(tmp_path / "ie", model)  # forget_rule is not a pre-training field
    cfg = {**FAST, "finetune_epochs": 0}
    hubs = {**cfg, "forget_rule": "hubs"}
    assert prepared_key("m", "unlearnrec", cfg) == prepared_key("m", "unlearnrec", hubs)
    with pytest.raises(ValueError, match="forget_rule must be"):
        fast(forget_rule="edges")


def _validation(model, seed=3):
    rng = np.random.default_rng(seed)
    users = rng.integers(0, model.train.num_users, 400)
    items = rng.integers(0, model.train.num_items, 400)
    keep = ~model.train.contains(users, items)
    return Interactions.from_pairs(
        users[keep], items[keep], model.train.num_users, model.train.num_items, dedupe=True
    )


@pytest.mark.parametrize("k", [0, 1])
def test_forget_guard_scales_ours0_down_only_when_validation_recall_is_short(model, prepared, monkeypatch, k):
    """``forget_guard``: a reachable target keeps the served state; an unreachable one tries every
    scale of Ours(0)'s shift and serves the best; every evaluation ranks the validation split only."""
    req, val = request_of(model, 10, 6), _validation(model)
    seen = []
    real = guard_module.evaluate_embeddings

    def spy(user_emb, item_emb, target, exclude=(), **kw):
        seen.append(target)
        return real(user_emb, item_emb, target, exclude=exclude, **kw)

    monkeypatch.setattr(guard_module, "evaluate_embeddings", spy)

    def served(**kw):
        m = UnlearnRec(fast(**{"finetune_epochs": k, "finetune_steps": 2, **kw}), seed=0)
        m.encoder, m.prepared_for = prepared.encoder, prepared.prepared_for
        m.set_validation(val)
        return m.forget(model, model.train, req)

    plain = served(finetune_stop_share=0.01)  # Ours(k) without the guard, the same stopping rule
    kept = served(finetune_stop_share=0.01, forget_guard=True)
    assert kept.info["guard_scale"] is None and len(kept.info["guard_checks"]) == 1
    torch.testing.assert_close(kept.model.backbone.e0, plain.model.backbone.e0)
    short = served(finetune_stop_share=2.0, forget_guard=True)
    checks = short.info["guard_checks"]
    assert [s for s, _ in checks] == [None, 0.75, 0.5, 0.25, 0.0]  # 2x the input's: never reached
    best_scale, best_val = max(checks, key=lambda c: c[1])
    assert short.info["guard_val_recall"] == best_val
    assert short.info["guard_scale"] == best_scale or (
        best_scale is None and short.info["guard_scale"] is None
    )
    scale = short.info["guard_scale"]
    if k == 0 or scale is not None:  # the served table: E⁰ + s (Ẽ⁰ - E⁰) of Ours(0) (s = 1: kept)
        e0, ours0 = model.backbone.e0.detach(), plain.model.backbone.e0.detach()
        if k > 0:
            ours0 = served(finetune_epochs=0).model.backbone.e0.detach()
        want = e0 + (1.0 if scale is None else scale) * (ours0 - e0)
        torch.testing.assert_close(short.model.backbone.e0, want)
    assert seen and all(t is val for t in seen)
    with pytest.raises(ValueError, match="forget_guard needs forget_guard_share or finetune_stop_share"):
        fast(forget_guard=True)


def spy_step_terms(monkeypatch) -> list:
    """Record the (λ_p, λ_u) each fine-tuning step passes to ``step_terms`` (the list returned)."""
    seen = []
    real = finetune_module.step_terms

    def spy(*args, **kw):
        seen.append(args[9:11])
        return real(*args, **kw)

    monkeypatch.setattr(finetune_module, "step_terms", spy)
    return seen


def test_finetune_lambda_u_weights_l_u_alone(model, prepared, monkeypatch):
    """``finetune_lambda_u`` replaces λ_u in the fine-tuning loss and nothing else: the total of one
    step equals the step with the pre-training's λ_u plus (new - old) x L_u; negative: λ_u. And
    ``finetune_lambda_p`` is the λ_p fine-tuning uses, not rescaled by the batch."""
    req = request_of(model, 10, 6)
    residual = model.graph.residual(req.edges)
    e_bar = prepared.final_embeddings(model)
    batch = next(iter(bpr_batches(residual.interactions, 64, np.random.default_rng(0), residual.device)))
    chunk = np.arange(len(req.edges))

    def terms(**kw):
        bb = copy_backbone(model.backbone)
        cfg = fast(**kw)
        lu = cfg.finetune_lambda_u if cfg.finetune_lambda_u >= 0 else None
        gen = torch.Generator().manual_seed(0)
        return step_terms(bb, residual, bb.e0, batch, gen, req.edges, chunk, e_bar, cfg, lambda_u=lu)

    base, heavy, inherit = terms(), terms(finetune_lambda_u=50.0), terms(finetune_lambda_u=-1.0)
    lam = fast().lambda_u
    want = base["total"] + (50.0 - lam) * base["unlearn"]
    torch.testing.assert_close(heavy["total"], want, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(inherit["total"], base["total"])
    # finetune_lambda_p reaches step_terms as its lambda_p (finetune() passes it, not rescaled)
    bb = copy_backbone(model.backbone)
    gen = torch.Generator().manual_seed(0)
    cfg = fast()
    light = step_terms(bb, residual, bb.e0, batch, gen, req.edges, chunk, e_bar, cfg, lambda_p=0.0)
    want = base["total"] - cfg.lambda_p * base["preserve"]
    torch.testing.assert_close(light["total"], want, rtol=1e-6, atol=1e-6)

    # through forget(): a heavier L_u pushes the request's edges further down
    def served(**kw):
        m = UnlearnRec(fast(finetune_epochs=1, finetune_steps=4, finetune_lr=5e-2, **kw), seed=0)
        m.encoder, m.prepared_for = prepared.encoder, prepared.prepared_for
        u, i = m.forget(model, model.train, req).model.embeddings()
        eu, ei = torch.from_numpy(req.edges.users.copy()), torch.from_numpy(req.edges.items.copy())
        return float((u[eu] * i[ei]).sum(-1).mean())

    assert served(finetune_lambda_u=1000.0) < served()
    seen = spy_step_terms(monkeypatch)
    served(finetune_lambda_p=0.25, finetune_batch_size=64)
    served(finetune_batch_size=64)
    cfg = fast()
    assert seen[0] == (0.25, cfg.lambda_u)
    assert seen[-1] == (cfg.lambda_p * cfg.batch_size / 64, cfg.lambda_u)


def test_finetune_recover_steps_train_without_l_p_after_the_epochs(model, prepared, monkeypatch):
    """``finetune_recover_steps``: after the epochs, that many more steps (over more than one pass of
    E_r when asked) at λ_u = ``finetune_recover_lambda_u`` and λ_p = 0, one ``"recover"`` history
    row, counted in the steps run; none when the stopping rule ended the run; 0: no such phase."""
    req = request_of(model, 10, 6)
    passes = math.ceil((len(model.train) - 10) / 100)
    seen = spy_step_terms(monkeypatch)

    def run(**kw):
        seen.clear()
        m = UnlearnRec(fast(finetune_epochs=1, finetune_steps=3, finetune_batch_size=100, **kw), seed=0)
        m.encoder, m.prepared_for = prepared.encoder, prepared.prepared_for
        return m.forget(model, model.train, req)

    made = []
    real_adam = finetune_module.adam
    monkeypatch.setattr(finetune_module, "adam", lambda params, lr: made.append(lr) or real_adam(params, lr))
    plain = run()
    assert plain.info["finetune_steps_run"] == 3 and len(seen) == 3 and len(made) == 1
    res = run(finetune_recover_steps=passes + 2, finetune_recover_lambda_u=7.0)
    assert len(made) == 3 and made[1] == made[2]  # the recovery's own Adam, at finetune_lr
    hist = res.info["finetune_history"]
    assert [r["epoch"] for r in hist] == [1, "recover"] and hist[-1]["steps"] == passes + 2
    assert res.info["finetune_steps_run"] == 3 + passes + 2 and len(seen) == 3 + passes + 2
    assert seen[:3] == [seen[0]] * 3 and seen[0][1] != 7.0
    assert seen[3:] == [(0.0, 7.0)] * (passes + 2)  # no L_p, L_u at its own weight
    # the first 3 steps are the plain run's: the same state before the recovery
    assert not torch.equal(res.model.backbone.e0, plain.model.backbone.e0)
    # a stopping rule met before any step: no recovery either
    users, items = np.arange(30), (np.arange(30) * 7) % model.train.num_items
    keep = ~model.train.contains(users, items)
    val = Interactions.from_pairs(users[keep], items[keep], model.train.num_users, model.train.num_items)
    m = UnlearnRec(fast(finetune_epochs=1, finetune_stop_share=0.01, finetune_recover_steps=5), seed=0)
    m.encoder, m.prepared_for = prepared.encoder, prepared.prepared_for
    m.set_validation(val)
    assert m.forget(model, model.train, req).info["finetune_steps_run"] == 0
    with pytest.raises(ConfigError, match="finetune_recover_steps"):
        from_dict(UnlearnRecConfig, {"finetune_recover_steps": -1}, "unlearnrec")
    with pytest.raises(ConfigError, match="finetune_recover_lambda_u"):
        from_dict(UnlearnRecConfig, {"finetune_recover_lambda_u": float("nan")}, "unlearnrec")


def test_finetune_recover_hold_keeps_the_request_where_the_forgetting_left_it(model, prepared, monkeypatch):
    """``finetune_recover_hold``: the recovery steps (and only they) add H x mean relu(ŷ - c)² over
    every request edge, c its score after the forgetting epochs; so the request's edges climb less above
    where the forgetting left them than in the same recovery without it. The loss itself is zero at or
    below the ceiling and pulls only the pairs above it."""
    scores = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    loss = holding_loss(scores, torch.tensor([2.0, 2.0, 2.0]))
    loss.backward()
    assert float(loss.detach()) == pytest.approx(1 / 3)
    assert scores.grad.tolist() == pytest.approx([0.0, 0.0, 2 / 3])
    assert float(holding_loss(torch.zeros(0), torch.zeros(0))) == 0.0
    req = request_of(model, 12, 3)
    eu, ei = torch.from_numpy(req.edges.users.copy()), torch.from_numpy(req.edges.items.copy())
    holds = []
    real = finetune_module.step_terms
    monkeypatch.setattr(finetune_module, "step_terms", lambda *a, **kw: holds.append(a[11]) or real(*a, **kw))

    def run(**kw):
        holds.clear()
        cfg = fast(finetune_epochs=1, finetune_steps=3, finetune_batch_size=100, finetune_lr=5e-2, **kw)
        m = UnlearnRec(cfg, seed=0)
        m.encoder, m.prepared_for = prepared.encoder, prepared.prepared_for
        u, i = m.forget(model, model.train, req).model.embeddings()
        return (u[eu] * i[ei]).sum(-1)

    after_forgetting = run()
    assert holds == [None] * 3
    free = run(finetune_recover_steps=12)
    held = run(finetune_recover_steps=12, finetune_recover_hold=1e4)
    assert len(holds) == 15 and holds[:3] == [None] * 3
    assert all(h is not None and h.weight == 1e4 for h in holds[3:])
    torch.testing.assert_close(holds[3].ceiling, after_forgetting, rtol=1e-5, atol=1e-5)
    rise = lambda s: float(torch.relu(s - after_forgetting).mean())  # noqa: E731
    assert rise(free) > 0 and rise(held) < 0.5 * rise(free)
    with pytest.raises(ConfigError, match="finetune_recover_hold"):
        from_dict(UnlearnRecConfig, {"finetune_recover_hold": -1.0}, "unlearnrec")


def test_finetune_recover_warmup_ramps_the_recovery_learning_rate(model, prepared, monkeypatch):
    """``finetune_recover_warmup`` = W: the recovery's steps run at ``finetune_lr`` x i / W for i = 1..W,
    then at ``finetune_lr``; the forgetting steps are untouched, and so is a recovery without it."""
    req = request_of(model, 10, 4)
    made: list[list[float]] = []  # per optimiser, the learning rate of every step it took
    real = finetune_module.adam

    def spy(params, lr):
        opt = real(params, lr)
        seen, step = [], opt.step
        made.append(seen)
        opt.step = lambda *a, **kw: seen.append(opt.param_groups[0]["lr"]) or step(*a, **kw)
        return opt

    monkeypatch.setattr(finetune_module, "adam", spy)

    def run(**kw):
        made.clear()
        cfg = fast(finetune_epochs=1, finetune_steps=3, finetune_batch_size=100, finetune_lr=4e-2, **kw)
        m = UnlearnRec(cfg, seed=0)
        m.encoder, m.prepared_for = prepared.encoder, prepared.prepared_for
        return m.forget(model, model.train, req).model.backbone.e0.detach().clone()

    plain = run(finetune_recover_steps=6)
    assert made == [[4e-2] * 3, [4e-2] * 6]
    warmed = run(finetune_recover_steps=6, finetune_recover_warmup=4)
    assert made[0] == [4e-2] * 3
    assert made[1] == pytest.approx([1e-2, 2e-2, 3e-2, 4e-2, 4e-2, 4e-2])
    assert not torch.allclose(plain, warmed)
    run(finetune_recover_steps=2, finetune_recover_warmup=4)  # shorter than its warm-up: never at full rate
    assert made[1] == pytest.approx([1e-2, 2e-2])
    with pytest.raises(ConfigError, match="finetune_recover_warmup"):
        from_dict(UnlearnRecConfig, {"finetune_recover_warmup": -1}, "unlearnrec")


def test_finetune_mlp_false_trains_the_table_alone(model, prepared, monkeypatch):
    """``finetune_mlp = False``: the MLP of Eq. 18 is never handed to the optimiser (the paper's default
    trains it), so no parameter shared by every row moves."""
    handed = []
    real = finetune_module.adam

    def spy(params, lr):
        params = list(params)
        handed.append(len(params))
        return real(params, lr)

    monkeypatch.setattr(finetune_module, "adam", spy)
    req = request_of(model, 10, 6)
    for flag in (True, False):
        m = UnlearnRec(fast(finetune_epochs=1, finetune_steps=2, finetune_mlp=flag), seed=0)
        m.encoder, m.prepared_for = prepared.encoder, prepared.prepared_for
        before = [p.detach().clone() for p in prepared.encoder.mlp.parameters()]
        m.forget(model, model.train, req)
        for p, q in zip(prepared.encoder.mlp.parameters(), before, strict=True):
            torch.testing.assert_close(p.detach(), q)  # the encoder's own MLP is never modified
    n_mlp = len(list(prepared.encoder.mlp.parameters()))
    assert handed == [1 + n_mlp, 1]


def test_forget_guard_share_guards_without_a_stopping_rule(model, prepared):
    """``forget_guard_share`` sets the guard's share alone: fine-tuning runs every step (no stopping
    rule, no check before the first step), then the guard checks the served state."""
    req, val = request_of(model, 10, 6), _validation(model)
    steps = {"finetune_epochs": 1, "finetune_steps": 3, "finetune_batch_size": 64, "forget_guard": True}
    m = UnlearnRec(fast(**steps, forget_guard_share=0.01), seed=0)
    m.encoder, m.prepared_for = prepared.encoder, prepared.prepared_for
    m.set_validation(val)
    info = m.forget(model, model.train, req).info
    assert info["finetune_steps_run"] == 3 and "finetune_val_checks" not in info
    assert info["guard_scale"] is None and len(info["guard_checks"]) == 1  # 1% is met: kept
    m.config = fast(**steps, forget_guard_share=2.0)
    info = m.forget(model, model.train, req).info
    assert [s for s, _ in info["guard_checks"]] == [None, 0.75, 0.5, 0.25, 0.0]
    with pytest.raises(ConfigError, match="forget_guard_share"):
        from_dict(UnlearnRecConfig, {"forget_guard_share": 2.5}, "unlearnrec")
    # no validation split: the guard cannot run, so the fine-tuning meant to run under it is skipped
    # and Ours(0) is served
    bare = UnlearnRec(fast(**steps, forget_guard_share=0.99, finetune_lambda_u=1000.0), seed=0)
    bare.encoder, bare.prepared_for = prepared.encoder, prepared.prepared_for
    res = bare.forget(model, model.train, req)
    assert res.info["finetune_skipped"] and res.info["guard_off"] == "no validation split"
    assert "finetune_steps_run" not in res.info
    ours0 = UnlearnRec(fast(), seed=0)
    ours0.encoder, ours0.prepared_for = prepared.encoder, prepared.prepared_for
    torch.testing.assert_close(res.model.backbone.e0, ours0.forget(model, model.train, req).model.backbone.e0)
    from unlearnrec.cli import forget as forget_cli

    line = forget_cli._guard_line(res.info)[0]
    assert "so fine-tuning was skipped (Ours(0) served); train the model with val_ratio > 0" in line


def test_forget_guard_every_serves_the_latest_fine_tuning_state_that_held(model, prepared, monkeypatch):
    """``forget_guard_every``: the guard's share is checked every N fine-tuning steps; when the final
    state falls short, the latest checked state that reached it is served (not Ours(0)'s scales);
    when none did, the scales as before. The validation values are scripted (1.0: the input model's)."""
    from unlearnrec.unlearn.unlearnrec import method as method_module

    req, val = request_of(model, 10, 6), _validation(model)
    monkeypatch.setattr(method_module, "validation_recall", lambda *a, **kw: 1.0)
    script: list[float] = []
    seen: list[torch.Tensor] = []

    def scripted(user_emb, item_emb, *a, **kw):
        seen.append(user_emb.detach().clone())
        return script.pop(0)

    monkeypatch.setattr(guard_module, "validation_recall", scripted)
    steps = {"finetune_epochs": 1, "finetune_steps": 6, "finetune_batch_size": 16, "forget_guard": True}

    def served(every: int, values: list[float]):
        script[:] = values
        seen.clear()
        m = UnlearnRec(fast(**steps, forget_guard_share=0.99, forget_guard_every=every), seed=0)
        m.encoder, m.prepared_for = prepared.encoder, prepared.prepared_for
        m.set_validation(val)
        return m.forget(model, model.train, req)

    # candidates at steps 2, 4, 6, checked newest first (fell, fell, held); the first is the final
    # state's, which the guard does not rank again
    res = served(2, [0.5, 0.5, 1.0])
    assert res.info["guard_keep_checks"] == [(2, 1.0), (4, 0.5), (6, 0.5)] and len(seen) == 3
    assert res.info["guard_checks"] == [(None, 0.5)]
    assert res.info["guard_kept_step"] == 2 and res.info["guard_scale"] is None
    assert res.info["guard_val_recall"] == 1.0 and not script
    from unlearnrec.cli import forget as forget_cli

    assert forget_cli._guard_line(res.info) == [
        "forget_guard: served the fine-tuning state of step 2 (the last one fell short) "
        "(validation recall@20=1.0000, 1 checks)"
    ]
    torch.testing.assert_close(res.model.embeddings()[0], seen[-1])  # the state checked last: step 2's
    # the final state holds: it is served after one check, whatever the earlier states would have said
    res = served(2, [1.0])
    assert "guard_kept_step" not in res.info and res.info["guard_scale"] is None and not script
    assert res.info["guard_keep_checks"] == [(6, 1.0)] and len(seen) == 1
    torch.testing.assert_close(res.model.embeddings()[0], seen[-1])
    # no candidate held: Ours(0)'s scales, as without forget_guard_every
    res = served(3, [0.5, 0.5, 0.5, 0.5, 1.0])  # candidates 6 (the final) and 3, then 0.75, 0.5, 0.25
    assert "guard_kept_step" not in res.info and res.info["guard_scale"] == 0.25
    assert [s for s, _ in res.info["guard_keep_checks"]] == [3, 6]
    assert [s for s, _ in res.info["guard_checks"]] == [None, 0.75, 0.5, 0.25]
    # off: no check while fine-tuning
    res = served(0, [0.5, 1.0])
    assert "guard_keep_checks" not in res.info and res.info["guard_scale"] == 0.75
    with pytest.raises(ConfigError, match="forget_guard_every"):
        from_dict(UnlearnRecConfig, {"forget_guard_every": -1}, "unlearnrec")


def test_finetune_min_mi_ng_skips_fine_tuning_on_requests_ours0_leaves_plausible(model, prepared):
    """``finetune_min_mi_ng``: fine-tuning runs only when Ours(0)'s own MI-NG on the request reaches the
    threshold; the criterion is forgetting_metrics' MI-NG of the Ours(0) model (same non-edges:
    the training edges avoided, the method's seed); below it the result is Ours(0)'s."""
    from unlearnrec.eval.membership import forgetting_metrics

    req = request_of(model, 10, 6)

    def served(**kw):
        m = UnlearnRec(fast(finetune_epochs=1, finetune_steps=2, finetune_batch_size=64, **kw), seed=0)
        m.encoder, m.prepared_for = prepared.encoder, prepared.prepared_for
        return m.forget(model, model.train, req)

    ours0 = UnlearnRec(fast(), seed=0)
    ours0.encoder, ours0.prepared_for = prepared.encoder, prepared.prepared_for
    plain = ours0.forget(model, model.train, req)
    want = forgetting_metrics(model.embeddings(), plain.model.embeddings(), req.edges, model.train, seed=0)
    low, high = served(finetune_min_mi_ng=1e-9), served(finetune_min_mi_ng=1e9)
    assert low.info["ours0_mi_ng"] == pytest.approx(want["mi_ng"], rel=1e-5)
    assert low.info["finetune_steps_run"] == 2 and "finetune_skipped" not in low.info
    assert "finetune_steps_run" not in high.info and "< finetune_min_mi_ng" in high.info["finetune_skipped"]
    torch.testing.assert_close(high.model.backbone.e0, plain.model.backbone.e0)
    assert "ours0_mi_ng" not in served().info  # 0: always fine-tune, nothing computed
    from unlearnrec.cli import forget as forget_cli

    mi = low.info["ours0_mi_ng"]
    assert forget_cli._guard_line(high.info) == [
        f"fine-tuning skipped: Ours(0)'s own MI-NG on the request {mi:.3f}"
    ]
    assert forget_cli._guard_line(low.info)[0].startswith("fine-tuning run: ")
    with pytest.raises(ConfigError, match="finetune_min_mi_ng"):
        from_dict(UnlearnRecConfig, {"finetune_min_mi_ng": -1.0}, "unlearnrec")


def test_cli_forget_says_what_the_guard_did(tmp_path, tiny_dir, capsys):
    """An encoder pre-trained with ``forget_guard`` says what the guard did, and says it is off when the
    model's dataset has no validation split (the tiny dataset has none)."""
    m, ie = tmp_path / "m0", tmp_path / "ie"
    code, _, err = run(
        capsys, "train", "--dataset", tiny_dir, "--epochs", 8, "--dim", 8, "--lr", 0.05, "--out", m, "-q"
    )
    assert code == 0, err
    cfg = tmp_path / "ie.toml"
    cfg.write_text(
        "[unlearnrec]\nbatch_size = 128\nsteps_per_epoch = 2\nlr = 0.01\n"
        'forget_rule = "hubs"\nforget_guard = true\nfinetune_stop_share = 2.0\n'
    )
    code, _, err = run(capsys, "pretrain", "--model", m, "--epochs", 1, "--config", cfg, "--out", ie, "-q")
    assert code == 0, err
    tr = TrainedModel.load(m).train
    req = tmp_path / "r.csv"
    req.write_text(f"{tr.users[0]} {tr.items[0]}\n{tr.users[3]} {tr.items[3]}\n")
    args = ("forget", "--model", m, "--method", "unlearnrec", "--encoder", ie, "--edges", req)
    code, out, err = run(capsys, *args, "--out", tmp_path / "m1")
    assert code == 0, err
    assert "forget_guard: off (no validation split: the model's dataset has none)" in out
    assert "train the model with val_ratio > 0" in out
    # with a validation split, the guard's verdict (the unit tests check what it serves)
    from unlearnrec.cli import forget as forget_cli

    info = {
        "guard_scale": 0.5,
        "guard_val_recall": 0.25,
        "guard_checks": [(None, 0.2), (0.75, 0.22), (0.5, 0.25)],
    }
    assert forget_cli._guard_line(info) == [
        "forget_guard: scaled Ours(0)'s shift to 0.5 (validation recall@20=0.2500, 3 checks)"
    ]
    kept = {"guard_scale": None, "guard_val_recall": 0.3, "guard_checks": [(None, 0.3)]}
    assert forget_cli._guard_line(kept)[0].startswith("forget_guard: kept the model as served")
    assert forget_cli._guard_line({}) == []


def test_preserve_target_residual_preserves_the_residual_graph_model(model, prepared, monkeypatch):
    """``preserve_target = "residual"``: L_p's target is the input model's E⁰ on Â_r, so the model
    with E⁰ itself on Â_r preserves it exactly (L_p = 0) where the paper's target (Ē on the whole
    graph) leaves L_p > 0; forget() hands that target to fine-tuning and pre-training builds it on
    each epoch's residual graph. Eq. 16's η term keeps Ē either way."""
    import unlearnrec.unlearn.unlearnrec.method as method_module
    import unlearnrec.unlearn.unlearnrec.pretrain as pretrain_module
    from unlearnrec.unlearn.unlearnrec.pretrain import preserve_target

    req = request_of(model, 10, 6)
    residual = model.graph.residual(req.edges)
    e_bar = prepared.final_embeddings(model)
    cfg = fast(preserve_target="residual")
    target = preserve_target(model.backbone, residual, e_bar, cfg)
    torch.testing.assert_close(target, final_embeddings(model.backbone, residual))
    assert preserve_target(model.backbone, residual, e_bar, fast()) is e_bar
    assert not torch.allclose(target, e_bar)
    batch = next(iter(bpr_batches(residual.interactions, 64, np.random.default_rng(0), residual.device)))
    chunk = np.arange(len(req.edges))

    def lp(config, tgt):
        bb = copy_backbone(model.backbone)
        gen = torch.Generator().manual_seed(0)
        terms = step_terms(bb, residual, bb.e0, batch, gen, req.edges, chunk, tgt, config)
        return float(terms["preserve"].detach())

    assert lp(cfg, target) < 1e-10 < 1e-6 < lp(fast(), e_bar)

    seen = []
    real_finetune = method_module.finetune
    monkeypatch.setattr(
        method_module, "finetune", lambda *a, **k: seen.append(a[4]) or real_finetune(*a, **k)
    )
    m = UnlearnRec(fast(preserve_target="residual", finetune_epochs=1, finetune_steps=2), seed=0)
    m.encoder, m.prepared_for = prepared.encoder, prepared.prepared_for
    m.forget(model, model.train, req)
    torch.testing.assert_close(seen[0], target)

    built = []
    real_target = pretrain_module.preserve_target
    monkeypatch.setattr(
        pretrain_module,
        "preserve_target",
        lambda bb, res, eb, c: built.append((res, real_target(bb, res, eb, c))) or built[-1][1],
    )
    UnlearnRec(fast(preserve_target="residual", epochs=2), seed=0).prepare(model, model.train)
    assert len(built) == 2
    for res, tgt in built:
        assert len(res.interactions) < len(model.graph.interactions)
        torch.testing.assert_close(tgt, final_embeddings(model.backbone, res))
    with pytest.raises(ValueError, match="preserve_target must be"):
        fast(preserve_target="clean")


@pytest.mark.parametrize(
    ("share", "kept", "checks"),
    [(0.95, None, 1), (0.97, 4, 5), (0.98, None, 6)],  # the last holds, an earlier one does, none does
)
def test_checking_the_guards_candidates_newest_first_serves_what_checking_each_at_its_step_does(
    model, prepared, monkeypatch, share, kept, checks
):
    """``forget_guard_every`` keeps its candidates aside and checks them newest first: the served state
    (the latest that holds) is the one a check of every candidate at its step serves (a budget of one
    table, the former behaviour), with fewer checks; at shares where none, some or all hold."""
    req, val = request_of(model, 10, 6), _validation(model)
    config = fast(finetune_epochs=1, finetune_steps=8, finetune_batch_size=16, forget_guard=True,
                  forget_guard_share=share, forget_guard_every=2, finetune_recover_steps=4)  # fmt: skip

    def served(budget: int):
        monkeypatch.setattr(finetune_module, "KEEP_BUDGET", budget)
        m = UnlearnRec(config, seed=0)
        m.encoder, m.prepared_for = prepared.encoder, prepared.prepared_for
        m.set_validation(val)
        return m.forget(model, model.train, req)

    budget = finetune_module.KEEP_BUDGET
    each, lazy = served(1), served(budget)
    assert [s for s, _ in each.info["guard_keep_checks"]] == [2, 4, 6, 8, 10, 12]
    assert set(lazy.info["guard_keep_checks"]) <= set(each.info["guard_keep_checks"])
    assert len(lazy.info["guard_keep_checks"]) == checks and lazy.info.get("guard_kept_step") == kept
    for key in ("guard_kept_step", "guard_scale", "guard_val_recall"):
        assert lazy.info.get(key) == each.info.get(key)
    for a, b in zip(lazy.model.embeddings(), each.model.embeddings(), strict=True):
        assert torch.equal(a, b)
