"""The fused training paths (issues 2 and 3) against the plain computations they replace.

``propagate_sum`` (LightGCN's readout as one Horner sum), SimGCL's loss with ÂE⁰ shared between the clean
readout and both noisy views (noise drawn in one call), the InfoNCE with 1/τ on the (B, d) operand, the
one-gather SSL term, and fit's fused Adam: same values (and, for SimGCL, the same generator stream) as the
straightforward versions written out here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from unlearnrec.backbones import SGL, LightGCN, LightGCNConfig, SGLConfig, SimGCL, SimGCLConfig
from unlearnrec.backbones.base import ssl_term
from unlearnrec.data.graph import Graph, propagate, propagate_layers, propagate_sum
from unlearnrec.data.sampling import bpr_batches
from unlearnrec.data.synthetic import planted_clusters
from unlearnrec.losses import bpr_loss, info_nce, l2_reg
from unlearnrec.train.loop import adam

NU, NI = 60, 40


@pytest.fixture
def graph() -> Graph:
    return Graph.from_interactions(planted_clusters(NU, NI, clusters=4, seed=0))


@pytest.fixture
def batch(graph):
    return next(bpr_batches(graph.interactions, 10**6, np.random.default_rng(0)))


# ---------------------------------------------------------------------------------- references
def ref_info_nce(a, b, t):
    z1, z2 = F.normalize(a, dim=1), F.normalize(b, dim=1)
    return F.cross_entropy(z1 @ z2.T / t, torch.arange(a.shape[0]))


def ref_simgcl_readout(m, adj, e0, gen=None, perturb=False):
    x, acc = e0, None
    for _ in range(m.layers):
        x = propagate(adj, x)
        if perturb:
            with torch.no_grad():
                u = torch.rand(x.shape, generator=gen, dtype=x.dtype)
                norm = torch.linalg.vector_norm(u, dim=-1, keepdim=True).clamp_min_(1e-12)
                u.mul_(m.config.eps / norm).mul_(torch.sign(x))
            x = x + u
        acc = x if acc is None else acc + x
    return acc / m.layers


def ref_ssl(m, batch, z1, z2):
    users = torch.unique(batch.users)
    items = torch.unique(batch.pos) + m.num_users
    t = m.config.temperature
    return m.config.ssl_weight * (
        ref_info_nce(z1[users], z2[users], t) + ref_info_nce(z1[items], z2[items], t)
    )


def ref_terms(m, graph, batch, e0, out, ssl=None):
    b = len(batch)
    idx = torch.cat([batch.users, m.num_users + batch.pos, m.num_users + batch.neg])
    u, i, j = out[idx].split(b)
    terms = {"bpr": bpr_loss((u * i).sum(-1), (u * j).sum(-1)), "reg": m.reg * l2_reg(e0[idx], batch_size=b)}
    if ssl is not None:
        terms["ssl"] = ssl
    terms["total"] = sum(terms.values())
    return terms


# ---------------------------------------------------------------------------------- propagate_sum
@pytest.mark.parametrize("layers", [0, 1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_propagate_sum_equals_the_layer_sum(graph, layers, dtype):
    adj = graph.adj if dtype == torch.float32 else graph.adj.to(dtype)  # float64: the generic fallback
    x = torch.randn(graph.num_nodes, 5, dtype=dtype, generator=torch.Generator().manual_seed(0))
    want = 0.3 * sum(propagate_layers(adj, x, layers))
    got = propagate_sum(adj, x, layers, 0.3)
    assert got.shape == x.shape and got.dtype == dtype
    assert torch.allclose(got, want, atol=1e-6)


def test_propagate_sum_coo_fallback(graph):
    x = torch.randn(graph.num_nodes, 4, generator=torch.Generator().manual_seed(0))
    coo = graph.adj.to_sparse_coo()
    assert torch.allclose(propagate_sum(coo, x, 2, 0.5), propagate_sum(graph.adj, x, 2, 0.5), atol=1e-6)


def test_propagate_sum_gradient_and_double_backward(graph):
    gen = torch.Generator().manual_seed(1)
    x0 = torch.randn(graph.num_nodes, 4, generator=gen, dtype=torch.float64)
    w = torch.randn(graph.num_nodes, 4, generator=gen, dtype=torch.float64)
    v = torch.randn(graph.num_nodes, 4, generator=gen, dtype=torch.float64)
    adj = graph.adj.to(torch.float64)

    def hvp(fn):
        x = x0.clone().requires_grad_(True)
        loss = (fn(x) * w).pow(2).sum()  # not quadratic in the operator's output alone: a real Hessian
        (g,) = torch.autograd.grad(loss, x, create_graph=True)
        (h,) = torch.autograd.grad((g * v).sum(), x)
        return g.detach(), h

    g_new, h_new = hvp(lambda x: propagate_sum(adj, x, 3, 0.25))
    g_ref, h_ref = hvp(lambda x: 0.25 * sum(propagate_layers(adj, x, 3)))
    assert torch.allclose(g_new, g_ref, atol=1e-10)
    assert torch.allclose(h_new, h_ref, atol=1e-10)
    assert h_new.abs().sum() > 0
    assert torch.autograd.gradcheck(
        lambda x: propagate_sum(adj, x, 2, 0.5), (x0[:, :2].clone().requires_grad_(),)
    )


def test_propagate_sum_rejects_negative_layers(graph):
    with pytest.raises(ValueError):
        propagate_sum(graph.adj, torch.zeros(graph.num_nodes, 2), -1)


# ---------------------------------------------------------------------------------- backbones
def test_lightgcn_loss_and_gradient_match_the_layer_loop(graph, batch):
    m = LightGCN(NU, NI, LightGCNConfig(dim=8, layers=3), generator=torch.Generator().manual_seed(0))
    e0 = m.e0.detach().clone().requires_grad_(True)
    out = sum(propagate_layers(graph.adj, e0, 3)) / 4
    ref = ref_terms(m, graph, batch, e0, out)
    ref["total"].backward()
    terms = m.loss(graph, batch)
    terms["total"].backward()
    for k in ref:
        assert abs(terms[k].item() - ref[k].item()) < 1e-6
    assert torch.allclose(m.e0.grad, e0.grad, atol=1e-7)


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_simgcl_loss_matches_the_separate_propagations(graph, batch, layers):
    """Same loss (1e-5), same gradient and same generator stream as clean + two separate noisy readouts."""
    cfg = SimGCLConfig(dim=8, layers=layers, ssl_weight=0.5, eps=0.2)
    m = SimGCL(NU, NI, cfg, generator=torch.Generator().manual_seed(0))
    e0 = m.e0.detach().clone().requires_grad_(True)
    g_ref, g_new = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    out = ref_simgcl_readout(m, graph.adj, e0)
    z1 = ref_simgcl_readout(m, graph.adj, e0, g_ref, perturb=True)
    z2 = ref_simgcl_readout(m, graph.adj, e0, g_ref, perturb=True)
    ref = ref_terms(m, graph, batch, e0, out, ref_ssl(m, batch, z1, z2))
    ref["total"].backward()
    terms = m.loss(graph, batch, generator=g_new)
    terms["total"].backward()
    assert set(terms) == set(ref)
    for k in ref:
        assert abs(terms[k].item() - ref[k].item()) < 1e-5, k
    assert terms["ssl"].item() > 0
    assert torch.allclose(m.e0.grad, e0.grad, atol=1e-6)
    # the generator has been advanced exactly as far
    assert torch.equal(torch.rand(4, generator=g_new), torch.rand(4, generator=g_ref))
    # the clean readout (evaluation) too
    assert torch.allclose(m.propagate(graph, m.e0), out, atol=1e-6)


def test_simgcl_ssl_loss_and_noisy_views_match_readout(graph, batch):
    m = SimGCL(
        NU, NI, SimGCLConfig(dim=8, layers=3, ssl_weight=0.5), generator=torch.Generator().manual_seed(0)
    )
    a, b = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    z1, z2 = m.noisy_views(graph.adj, m.e0, a, propagate(graph.adj, m.e0))
    r1 = m.readout(graph.adj, m.e0, b, perturb=True)
    r2 = m.readout(graph.adj, m.e0, b, perturb=True)
    assert torch.allclose(z1, r1, atol=1e-7) and torch.allclose(z2, r2, atol=1e-7)
    assert not torch.allclose(z1, z2)
    a, b = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    got = m.ssl_loss(graph, batch, m.e0, a)
    want = ref_ssl(
        m,
        batch,
        ref_simgcl_readout(m, graph.adj, m.e0, b, perturb=True),
        ref_simgcl_readout(m, graph.adj, m.e0, b, perturb=True),
    )
    assert abs(got.item() - want.item()) < 1e-5


def test_sgl_loss_matches_the_layer_loops(graph, batch):
    m = SGL(NU, NI, SGLConfig(dim=8, layers=2, ssl_weight=0.5), generator=torch.Generator().manual_seed(0))
    m.on_epoch_start(graph, torch.Generator().manual_seed(2))
    _, v1, v2 = m._views
    e0 = m.e0.detach().clone().requires_grad_(True)

    def mean(adj):
        return sum(propagate_layers(adj, e0, 2)) / 3

    ref = ref_terms(m, graph, batch, e0, mean(graph.adj), ref_ssl(m, batch, mean(v1), mean(v2)))
    ref["total"].backward()
    terms = m.loss(graph, batch)
    terms["total"].backward()
    for k in ref:
        assert abs(terms[k].item() - ref[k].item()) < 1e-5, k
    assert torch.allclose(m.e0.grad, e0.grad, atol=1e-6)


# ---------------------------------------------------------------------------------- losses
def test_info_nce_equals_the_scaled_logits_form():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(30, 6, generator=gen), torch.randn(30, 6, generator=gen)
    for t in (0.1, 0.5, 2.0):
        assert abs(float(info_nce(a, b, t)) - float(ref_info_nce(a, b, t))) < 1e-5


def test_ssl_term_gathers_users_then_items(graph, batch):
    gen = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(NU + NI, 5, generator=gen), torch.randn(NU + NI, 5, generator=gen)

    class Cfg:
        temperature, ssl_weight = 0.2, 0.3

    class M:
        num_users, config = NU, Cfg

    got = ssl_term(batch, z1, z2, NU, 0.2, 0.3)
    assert abs(float(got) - float(ref_ssl(M, batch, z1, z2))) < 1e-6


# ---------------------------------------------------------------------------------- optimiser
def test_fit_adam_is_fused_on_cpu_and_steps_like_adam():
    p = torch.nn.Parameter(torch.randn(7, 3, generator=torch.Generator().manual_seed(0)))
    q = torch.nn.Parameter(p.detach().clone())
    opt_f, opt_r = adam([p], 1e-2), torch.optim.Adam([q], lr=1e-2, foreach=False)
    assert opt_f.defaults["fused"] is True
    for k in range(5):
        g = torch.randn(7, 3, generator=torch.Generator().manual_seed(k))
        p.grad, q.grad = g.clone(), g.clone()
        opt_f.step()
        opt_r.step()
    assert torch.allclose(p, q, atol=1e-6)
    assert not torch.equal(p.detach(), torch.randn(7, 3, generator=torch.Generator().manual_seed(0)))
    # an integer tensor cannot be fused: the default implementation is used (no error)
    assert not adam(
        [torch.nn.Parameter(torch.zeros(2, dtype=torch.int64), requires_grad=False)], 1e-2
    ).defaults["fused"]
