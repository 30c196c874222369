from pathlib import Path

import numpy as np
import pytest
import torch

from unlearnrec.backbones import (
    BACKBONES,
    MF,
    SGL,
    LightGCN,
    LightGCNConfig,
    MFConfig,
    SGLConfig,
    SimGCL,
    SimGCLConfig,
    backbone_config,
    build_backbone,
)
from unlearnrec.config import from_dict, read_toml
from unlearnrec.data.graph import Graph, propagate
from unlearnrec.data.synthetic import planted_clusters
from unlearnrec.errors import ConfigError
from unlearnrec.model import TrainedModel
from unlearnrec.train.loop import TrainConfig, fit

from .contracts import NI, NU, BackboneContract

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


# ---------------------------------------------------------------------------------- the contract
class TestLightGCN(BackboneContract):
    def make(self, num_users, num_items, generator):
        return LightGCN(num_users, num_items, LightGCNConfig(dim=8, layers=2), generator=generator)


class TestSGL(BackboneContract):
    has_ssl = True

    def make(self, num_users, num_items, generator):
        return SGL(num_users, num_items, SGLConfig(dim=8, layers=2, ssl_weight=0.1), generator=generator)


class TestSimGCL(BackboneContract):
    has_ssl = True

    def make(self, num_users, num_items, generator):
        return SimGCL(
            num_users, num_items, SimGCLConfig(dim=8, layers=2, ssl_weight=0.1), generator=generator
        )


class TestMF(BackboneContract):
    def make(self, num_users, num_items, generator):
        return MF(num_users, num_items, MFConfig(dim=8), generator=generator)


# ---------------------------------------------------------------------------------- helpers
@pytest.fixture
def graph() -> Graph:
    return Graph.from_interactions(planted_clusters(NU, NI, clusters=4, seed=0))


def _edges(adj: torch.Tensor) -> set[tuple[int, int]]:
    coo = adj.to_sparse_coo().coalesce()
    r, c = coo.indices().numpy()
    return set(zip(r.tolist(), c.tolist(), strict=True))


# ---------------------------------------------------------------------------------- SGL
def test_sgl_views_differ_per_draw_and_keep_a_fraction(graph):
    m = SGL(NU, NI, SGLConfig(dim=8, keep=0.8))
    gen = torch.Generator().manual_seed(0)
    a1, a2 = m.draw_views(graph, gen)
    b1, _ = m.draw_views(graph, gen)
    full = _edges(graph.adj)
    e1, e2, f1 = _edges(a1), _edges(a2), _edges(b1)
    assert e1 != e2 and e1 != f1  # independent draws
    assert e1 <= full and e2 <= full  # a view only ever drops edges
    assert 0.7 < len(e1) / len(full) < 0.9
    # same generator state -> same views
    c1, c2 = m.draw_views(graph, torch.Generator().manual_seed(0))
    assert _edges(c1) == e1 and _edges(c2) == e2


def test_sgl_epoch_views_are_used_only_on_their_graph(graph, monkeypatch):
    m = SGL(NU, NI, SGLConfig(dim=8, layers=2), generator=torch.Generator().manual_seed(0))
    from unlearnrec.data.sampling import bpr_batches

    batch = next(bpr_batches(graph.interactions, 10**6, np.random.default_rng(0)))
    seen = []
    orig = m.draw_views
    monkeypatch.setattr(m, "draw_views", lambda g, gen=None: (seen.append(g), orig(g, gen))[1])
    m.on_epoch_start(graph, torch.Generator().manual_seed(1))
    assert seen == [graph]
    s1 = m.loss(graph, batch, generator=torch.Generator().manual_seed(2))["ssl"]
    s2 = m.loss(graph, batch, generator=torch.Generator().manual_seed(3))["ssl"]
    assert torch.equal(s1, s2) and seen == [graph]  # cached for the epoch: no new draw
    residual = graph.residual(graph.interactions.of_users(np.array([0, 1])))
    r1 = m.loss(residual, batch, generator=torch.Generator().manual_seed(2))["ssl"]
    r2 = m.loss(residual, batch, generator=torch.Generator().manual_seed(3))["ssl"]
    assert seen[1:] == [residual, residual]  # another graph: fresh views of *that* graph each call
    assert not torch.equal(r1, r2)


def test_sgl_copies_do_not_carry_the_epoch_views(graph):
    import copy

    m = SGL(NU, NI, SGLConfig(dim=8))
    m.on_epoch_start(graph, torch.Generator().manual_seed(0))
    assert m._views is not None
    c = copy.deepcopy(m)
    assert c._views is None and m._views is not None
    assert torch.equal(c.e0, m.e0)


def test_sgl_fit_redraws_views_every_epoch(graph, monkeypatch):
    m = SGL(NU, NI, SGLConfig(dim=8, layers=2), generator=torch.Generator().manual_seed(0))
    calls = []
    orig = m.on_epoch_start
    monkeypatch.setattr(m, "on_epoch_start", lambda g, gen=None: (calls.append(g), orig(g, gen))[1])
    res = fit(m, graph, TrainConfig(epochs=3, batch_size=64, lr=1e-2, patience=0))
    assert calls == [graph] * 3
    assert all(np.isfinite(r["ssl"]) and r["ssl"] > 0 for r in res.history)


# ---------------------------------------------------------------------------------- SimGCL
def test_simgcl_noise_norm_eps_and_sign_aligned():
    m = SimGCL(NU, NI, SimGCLConfig(dim=16, eps=0.3))
    x = torch.randn(50, 16, generator=torch.Generator().manual_seed(0))
    n = m.noise(x, torch.Generator().manual_seed(1))
    torch.testing.assert_close(n.norm(dim=1), torch.full((50,), 0.3))
    assert torch.equal(torch.sign(n), torch.sign(x))
    n2 = m.noise(x, torch.Generator().manual_seed(2))
    assert not torch.allclose(n, n2)


def test_simgcl_perturbed_view_adds_eps_noise_per_layer(graph):
    m = SimGCL(NU, NI, SimGCLConfig(dim=8, layers=1, eps=0.2), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        clean = m.propagate(graph, m.e0)
        noisy = m.readout(graph.adj, m.e0, torch.Generator().manual_seed(1), perturb=True)
    diff = noisy - clean
    rows = (clean != 0).all(dim=1)  # isolated nodes have zero rows, hence zero (sign-0) noise
    assert rows.sum() > 0.9 * (NU + NI)
    torch.testing.assert_close(diff[rows].norm(dim=1), torch.full((int(rows.sum()),), 0.2))
    assert torch.equal(torch.sign(diff[rows]), torch.sign(clean[rows]))


def test_simgcl_readout_excludes_layer0(graph):
    m = SimGCL(NU, NI, SimGCLConfig(dim=8, layers=2), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        x1 = propagate(graph.adj, m.e0)
        x2 = propagate(graph.adj, x1)
        torch.testing.assert_close(m.propagate(graph, m.e0), (x1 + x2) / 2)
        lg = LightGCN(NU, NI, LightGCNConfig(dim=8, layers=2))
        torch.testing.assert_close(lg.propagate(graph, m.e0), (m.e0 + x1 + x2) / 3)


def test_simgcl_two_views_differ_but_clean_is_deterministic(graph):
    m = SimGCL(NU, NI, SimGCLConfig(dim=8), generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        v1 = m.readout(graph.adj, m.e0, gen, perturb=True)
        v2 = m.readout(graph.adj, m.e0, gen, perturb=True)
        assert not torch.allclose(v1, v2)
        assert torch.equal(m.propagate(graph, m.e0), m.propagate(graph, m.e0))


# ---------------------------------------------------------------------------------- MF
def test_mf_embed_ignores_graph(graph):
    m = MF(NU, NI, MFConfig(dim=8), generator=torch.Generator().manual_seed(0))
    other = Graph.from_interactions(planted_clusters(NU, NI, clusters=2, seed=5))
    u1, i1 = m.embed(graph)
    u2, i2 = m.embed(other)
    u3, i3 = m.embed(None)
    assert torch.equal(u1, u2) and torch.equal(u1, u3) and torch.equal(i1, i2) and torch.equal(i1, i3)
    assert torch.equal(u1, m.e0[:NU]) and torch.equal(i1, m.e0[NU:])


# ---------------------------------------------------------------------------------- registry, configs
def test_registry_builds_every_backbone():
    assert {"lightgcn", "sgl", "simgcl", "mf"} <= set(BACKBONES)
    m = build_backbone("sgl", NU, NI, {"dim": 8, "keep": 0.9})
    assert isinstance(m, SGL) and m.config.keep == 0.9 and m.layers == 3
    assert isinstance(build_backbone("simgcl", NU, NI, {"eps": 0.1}), SimGCL)
    assert isinstance(build_backbone("mf", NU, NI, {}), MF)


@pytest.mark.parametrize(
    "name,values",
    [
        ("sgl", {"keep": 0.0}),
        ("sgl", {"temperature": 0.0}),
        ("simgcl", {"layers": 0}),
        ("simgcl", {"eps": -1.0}),
        ("mf", {"layers": 2}),
        ("sgl", {"eps": 0.1}),
        ("lightgcn", {"init": "uniform"}),
        ("simgcl", {"init": "Xavier"}),
        ("mf", {"init_std": 0.0}),
    ],
)
def test_bad_backbone_config_is_a_config_error(name, values):
    with pytest.raises(ConfigError):
        backbone_config(name, values)


@pytest.mark.parametrize("name", ["lightgcn", "sgl", "simgcl", "mf"])
def test_xavier_init_bounds_each_table_by_its_own_fan(name):
    """Xavier-uniform per table (SELFRec / SSLRec): |w| <= sqrt(6 / (rows + d)), std bound / sqrt(3)."""
    nu, ni, d = 3000, 500, 16

    def build(**values):
        return build_backbone(name, nu, ni, {"dim": d, **values}, generator=torch.Generator().manual_seed(0))

    e0 = build(init="xavier").e0.detach()
    for rows, n in ((e0[:nu], nu), (e0[nu:], ni)):
        bound = (6 / (n + d)) ** 0.5
        assert rows.abs().max() <= bound and rows.abs().max() > 0.95 * bound
        assert float(rows.std()) == pytest.approx(bound / 3**0.5, rel=0.05)
    assert float(build().e0.detach().std()) == pytest.approx(0.1, rel=0.05)  # the default is unchanged
    assert torch.equal(e0, build(init="xavier").e0.detach())  # seeded


def test_shipped_configs_parse():
    files = sorted(CONFIGS.glob("*.toml"))
    names = {p.stem for p in files}
    for b in ("lightgcn", "sgl", "simgcl", "mf"):
        for d in ("ml-1m", "yelp2018", "gowalla", "ml-100k"):
            assert f"{b}-{d}" in names
    for p in files:
        raw = read_toml(p)
        if p.stem.startswith("unlearnrec"):  # the Influence Encoder's recipe, not a backbone's
            from unlearnrec.unlearn.unlearnrec import UnlearnRecConfig

            assert set(raw) == {"unlearnrec"}
            cfg = from_dict(UnlearnRecConfig, dict(raw["unlearnrec"]), "unlearnrec")
            assert cfg.lambda_p * cfg.batch_size == pytest.approx(0.01 * 512)  # the λ_p rule it documents
            continue
        assert set(raw) <= {"model", "train", "data"}
        model = dict(raw["model"])
        name = model.pop("backbone")
        assert p.stem.startswith(f"{name}-")
        backbone_config(name, model)
        from_dict(TrainConfig, raw.get("train", {}), "train")


@pytest.mark.parametrize("name", ["sgl", "simgcl", "mf"])
def test_save_load_roundtrip(tmp_path, graph, name):
    net = build_backbone(name, NU, NI, {"dim": 8}, generator=torch.Generator().manual_seed(0))
    model = TrainedModel(net, graph, name)
    model.save(tmp_path / name)
    back = TrainedModel.load(tmp_path / name)
    assert type(back.backbone) is type(net) and back.backbone.config == net.config
    a, b = model.embeddings(), back.embeddings()
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("how", ["flag", "config"])
def test_cli_trains_each_backbone(tmp_path, tiny_dir, capsys, how):
    from unlearnrec.cli import main

    for name in ("sgl", "simgcl", "mf"):
        pick = ["--backbone", name] if how == "flag" else ["--config", CONFIGS / f"{name}-ml-100k.toml"]
        out = tmp_path / f"{name}-{how}"
        argv = [
            "train",
            "--dataset",
            tiny_dir,
            *pick,
            "--epochs",
            1,
            "--dim",
            8,
            "--out",
            out,
            "-q",
            "--json",
        ]
        code = main([str(a) for a in argv])
        _, err = capsys.readouterr()
        assert code == 0, err
        back = TrainedModel.load(out)
        assert back.backbone_name == name and type(back.backbone) is type(build_backbone(name, 2, 2))
