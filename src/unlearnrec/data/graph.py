"""Normalised bipartite adjacency (sparse CSR, never dense) and its symmetric propagation."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from unlearnrec.data.interactions import Interactions

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled")


def normalized_adjacency(
    users: np.ndarray,
    items: np.ndarray,
    num_users: int,
    num_items: int,
    weights: np.ndarray | None = None,
    device: torch.device | str = "cpu",
    degrees: tuple[np.ndarray, np.ndarray] | None = None,
) -> torch.Tensor:
    """D^-1/2 Ā D^-1/2 of the bipartite graph, as an (N x N) torch sparse CSR tensor, in O(nnz).

    Ā = [[0, A], [Aᵀ, 0]] with users first and items offset by ``num_users`` (docs/method.md §1).
    Degrees are counted inside the given edge set (so the IDM of §2 is this function applied
    to the request edges alone). Degree-0 nodes get an all-zero row (never inf or NaN).
    ``weights`` (optional, one per edge) scales an edge before normalisation (edge dropout
    uses 1/keep). ``degrees`` = (user degrees, item degrees) replace the counted ones (the IDM
    normalised by the training graph's degrees). The matrix is symmetric, which :func:`propagate`
    relies on.
    """
    n = num_users + num_items
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    w = np.ones(len(users), dtype=np.float64) if weights is None else np.asarray(weights, np.float64)
    if degrees is None:
        degrees = (
            np.bincount(users, weights=w, minlength=num_users),
            np.bincount(items, weights=w, minlength=num_items),
        )
    deg = np.concatenate([np.asarray(degrees[0], np.float64), np.asarray(degrees[1], np.float64)])
    with np.errstate(divide="ignore"):
        dinv = np.where(deg > 0, 1.0 / np.sqrt(np.maximum(deg, 1e-300)), 0.0)
    # CSR in O(nnz + N) by counting sort: user rows come first (their columns follow the edge
    # order), item rows after; a stable argsort is used only when the edges are not user-sorted.
    if len(users) > 1 and not bool(np.all(users[1:] >= users[:-1])):
        o = np.argsort(users, kind="stable")
        users, items, w = users[o], items[o], w[o]
    o = np.argsort(items, kind="stable")
    rows = np.concatenate([users, items[o] + num_users])
    cols = np.concatenate([items + num_users, users[o]])
    vals = np.concatenate([w, w[o]]) * dinv[rows] * dinv[cols]
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
    return _csr(indptr, cols, vals, n, device)


def _csr(indptr, cols, vals, n, device) -> torch.Tensor:
    # int32 indices where they fit: MKL's sparse product (LP64) takes them as they are, while int64
    # indices are converted to int32 on every product (two copies of the index arrays per call).
    itype = np.int32 if max(n, len(cols)) < np.iinfo(np.int32).max else np.int64
    return torch.sparse_csr_tensor(
        torch.from_numpy(np.ascontiguousarray(indptr, dtype=itype)),
        torch.from_numpy(np.ascontiguousarray(cols, dtype=itype)),
        torch.from_numpy(np.ascontiguousarray(vals, dtype=np.float32)),
        size=(n, n),
        device=device,
        check_invariants=False,
    )


def csr_residual(adj: torch.Tensor, num_users: int, users: np.ndarray, items: np.ndarray) -> torch.Tensor:
    """Â_r of the graph with the edges (users, items) removed, from Â itself in O(nnz).

    Entries of the removed edges are masked out and the surviving values are renormalised by
    the new degrees (Â was built from unit weights, so each value is 1/sqrt(d_r d_c)).
    """
    n = adj.shape[0]
    indptr = adj.crow_indices().cpu().numpy()
    cols = adj.col_indices().cpu().numpy()
    deg = np.diff(indptr).astype(np.float64)
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(indptr))
    keys = rows * n + cols  # sorted: rows ascending, columns sorted within each row
    u = np.asarray(users, dtype=np.int64)
    i = np.asarray(items, dtype=np.int64) + num_users
    q = np.concatenate([u * n + i, i * n + u])
    pos = np.searchsorted(keys, q)
    keep = np.ones(len(keys), dtype=bool)
    keep[pos] = False
    deg_new = deg - np.bincount(np.concatenate([u, i]), minlength=n)
    with np.errstate(divide="ignore"):
        dinv = np.where(deg_new > 0, 1.0 / np.sqrt(np.maximum(deg_new, 1e-300)), 0.0)
    r, c = rows[keep], cols[keep]
    new_indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(r, minlength=n), out=new_indptr[1:])
    return _csr(new_indptr, c, dinv[r] * dinv[c], n, adj.device)


def _spmm(adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Â x (no autograd). On CPU a CSR Â goes through ``addmm`` with ``beta=0`` into a fresh
    uninitialised output: ``torch.sparse.mm`` zero-fills its output and copies the product into
    it, which costs as much again as the product itself on this machine."""
    if (
        adj.layout == torch.sparse_csr
        and adj.device.type == "cpu"
        and x.dim() == 2
        and x.dtype == adj.dtype
        and not adj.requires_grad
    ):
        out = torch.empty(adj.shape[0], x.shape[1], dtype=x.dtype)
        return torch.addmm(out, adj, x, beta=0, out=out)
    return torch.sparse.mm(adj, x)


class _SymSpMM(torch.autograd.Function):
    """Y = Â X with the backward Â gradY, valid because Â is symmetric.

    Reusing Â avoids building Âᵀ (a transpose of a CSR tensor) on every backward, which is
    what a generic sparse backward does; on ML-1M that is a 3x saving on a training step.
    """

    @staticmethod
    def forward(ctx, adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.adj = adj
        return _spmm(adj, x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        # through propagate, so that a double backward (Hessian-vector products) reuses Â too
        # instead of the generic sparse backward (13x slower on ML-1M-sized graphs)
        return None, propagate(ctx.adj, grad.contiguous())


def propagate(adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """One propagation step Â x for a symmetric sparse Â; differentiable in ``x`` (twice too)."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _SymSpMM.apply(adj, x)
    return _spmm(adj, x)


def _spmm_add(adj: torch.Tensor, h: torch.Tensor, x: torch.Tensor, scale: float) -> torch.Tensor:
    """scale (x + Â h) (no autograd). On CPU a CSR Â goes through one ``addmm`` with ``beta = alpha =
    scale``: MKL adds ``x`` while it writes the product, so the sum costs no extra pass over N x d."""
    if (
        adj.layout == torch.sparse_csr
        and adj.device.type == "cpu"
        and h.dim() == 2
        and h.dtype == adj.dtype == x.dtype
        and not adj.requires_grad
    ):
        out = torch.empty(adj.shape[0], h.shape[1], dtype=h.dtype)
        return torch.addmm(x, adj, h, beta=scale, alpha=scale, out=out)
    out = torch.sparse.mm(adj, h) + x
    return out if scale == 1.0 else out * scale


def _propagate_sum(adj: torch.Tensor, x: torch.Tensor, layers: int, scale: float) -> torch.Tensor:
    # Horner: x + Â(x + Â(x + Âx)) = Σ_{l=0}^{3} Â^l x, each step one fused product-and-add
    if layers == 0:
        return x * scale
    h = x
    for k in range(layers):
        h = _spmm_add(adj, h, x, scale if k == layers - 1 else 1.0)
    return h


class _SymSpMMSum(torch.autograd.Function):
    """Y = scale Σ_{l=0}^{L} Â^l X; the operator is symmetric (Â is), so the backward is the same sum of
    the incoming gradient, computed by the same function (double backward included)."""

    @staticmethod
    def forward(ctx, adj: torch.Tensor, x: torch.Tensor, layers: int, scale: float):  # type: ignore[override]
        ctx.adj, ctx.layers, ctx.scale = adj, layers, scale
        return _propagate_sum(adj, x, layers, scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return None, propagate_sum(ctx.adj, grad.contiguous(), ctx.layers, ctx.scale), None, None


def propagate_sum(adj: torch.Tensor, x: torch.Tensor, layers: int, scale: float = 1.0) -> torch.Tensor:
    """scale · (x + Âx + ... + Â^L x) (N, d) for a symmetric sparse Â; differentiable in ``x`` (twice too).

    LightGCN's mean readout is ``propagate_sum(Â, E⁰, L, 1 / (L + 1))``. Equal to summing
    :func:`propagate_layers` (up to float rounding: the sum is taken in Horner order, each
    step a product with the addition fused into it, so it costs L products and no separate
    pass over the layers, forward or backward). Nothing but Â is kept for the backward.
    """
    if layers < 0:
        raise ValueError(f"layers must be >= 0, got {layers}")
    if torch.is_grad_enabled() and x.requires_grad:
        return _SymSpMMSum.apply(adj, x, int(layers), float(scale))
    return _propagate_sum(adj, x, int(layers), float(scale))


def propagate_layers(adj: torch.Tensor, x: torch.Tensor, layers: int) -> list[torch.Tensor]:
    """[x, Âx, Â²x, ..., Â^L x]."""
    out = [x]
    for _ in range(layers):
        out.append(propagate(adj, out[-1]))
    return out


@dataclass(frozen=True, eq=False)
class Graph:
    """A training graph: the interactions and their normalised adjacency Â (N x N sparse CSR).

    ``residual(edges)`` gives the graph of E_r = E \\ E_Δ (docs/method.md §1), in O(nnz).
    """

    interactions: Interactions
    adj: torch.Tensor

    @classmethod
    def from_interactions(cls, inter: Interactions, device: torch.device | str = "cpu") -> Graph:
        adj = normalized_adjacency(inter.users, inter.items, inter.num_users, inter.num_items, device=device)
        return cls(inter, adj)

    @property
    def num_users(self) -> int:
        return self.interactions.num_users

    @property
    def num_items(self) -> int:
        return self.interactions.num_items

    @property
    def num_nodes(self) -> int:
        return self.num_users + self.num_items

    @property
    def device(self) -> torch.device:
        return self.adj.device

    def residual(self, edges: Interactions) -> Graph:
        """The graph without ``edges`` (which must all be present), in O(nnz)."""
        remaining = self.interactions.drop(edges)
        if len(edges) == 0:
            return self
        return Graph(remaining, csr_residual(self.adj, self.num_users, edges.users, edges.items))

    def dropped(self, keep: float, generator: torch.Generator) -> torch.Tensor:
        """Â of a random edge-dropped view (each edge kept with prob ``keep``, renormalised)."""
        inter = self.interactions
        mask = torch.rand(len(inter), generator=generator).numpy() < keep
        return normalized_adjacency(
            inter.users[mask], inter.items[mask], inter.num_users, inter.num_items, device=self.device
        )

    def to(self, device: torch.device | str) -> Graph:
        return Graph(self.interactions, self.adj.to(device))
