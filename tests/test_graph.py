import numpy as np
import pytest
import torch

from unlearnrec.data.graph import Graph, normalized_adjacency, propagate, propagate_layers
from unlearnrec.data.interactions import Interactions

from .conftest import three_edge


def dense(adj: torch.Tensor) -> np.ndarray:
    return adj.to_dense().numpy()


def test_normalisation_three_edge_by_hand():
    # edges (0,0), (0,1), (1,1): degrees u0=2, u1=1, i0=1, i1=2; nodes u0,u1,i0,i1 = 0,1,2,3
    a = dense(normalized_adjacency(*_ui(three_edge()), 2, 2))
    expect = np.zeros((4, 4))
    expect[0, 2] = expect[2, 0] = 1 / np.sqrt(2 * 1)
    expect[0, 3] = expect[3, 0] = 1 / np.sqrt(2 * 2)
    expect[1, 3] = expect[3, 1] = 1 / np.sqrt(1 * 2)
    np.testing.assert_allclose(a, expect, rtol=1e-6)


def _ui(inter):
    return inter.users, inter.items


def test_isolated_nodes_get_zero_rows_not_nan():
    inter = Interactions(np.array([0]), np.array([0]), 3, 3)
    a = dense(normalized_adjacency(inter.users, inter.items, 3, 3))
    assert np.isfinite(a).all()
    assert a[1].sum() == 0 and a[5].sum() == 0
    assert a[0, 3] == pytest.approx(1.0)


def test_adjacency_is_symmetric_and_sparse(tiny):
    adj = Graph.from_interactions(tiny).adj
    assert adj.layout == torch.sparse_csr
    assert adj._nnz() == 2 * len(tiny)
    d = dense(adj)
    np.testing.assert_allclose(d, d.T, atol=1e-7)


def test_residual_equals_rebuild(tiny):
    g = Graph.from_interactions(tiny)
    rng = np.random.default_rng(0)
    drop = tiny.subset(rng.choice(len(tiny), 25, replace=False))
    r = g.residual(drop)
    rebuilt = Graph.from_interactions(tiny.drop(drop))
    np.testing.assert_allclose(dense(r.adj), dense(rebuilt.adj), atol=1e-6)
    assert len(r.interactions) == len(tiny) - 25
    assert r.interactions.intersects(drop) == 0
    # the original graph is untouched
    np.testing.assert_allclose(dense(g.adj), dense(Graph.from_interactions(tiny).adj))


def test_residual_of_whole_user_isolates_it(tiny):
    g = Graph.from_interactions(tiny)
    r = g.residual(tiny.of_users([3]))
    assert dense(r.adj)[3].sum() == 0


def test_propagate_gradient_matches_dense(tiny):
    g = Graph.from_interactions(tiny)
    x = torch.randn(g.num_nodes, 4, dtype=torch.float32, requires_grad=True)
    w = torch.randn(g.num_nodes, 4)
    (propagate_layers(g.adj, x, 3)[-1] * w).sum().backward()
    a = torch.from_numpy(dense(g.adj))
    x2 = x.detach().clone().requires_grad_(True)
    (torch.linalg.matrix_power(a, 3) @ x2 * w).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-4, atol=1e-5)


def test_propagate_double_backward(tiny):
    # influence methods need Hessian-vector products through the propagation
    g = Graph.from_interactions(tiny)
    x = torch.randn(g.num_nodes, 3, requires_grad=True)
    y = propagate(g.adj, x)
    loss = (y**2).sum()
    (grad,) = torch.autograd.grad(loss, x, create_graph=True)
    v = torch.randn_like(x)
    (hv,) = torch.autograd.grad((grad * v).sum(), x)
    a = torch.from_numpy(dense(g.adj))
    expect = 2 * a.T @ a @ v  # Hessian of ||Ax||² is 2AᵀA
    torch.testing.assert_close(hv, expect, rtol=1e-4, atol=1e-5)
