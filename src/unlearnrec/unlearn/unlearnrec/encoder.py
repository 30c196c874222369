"""The Influence Dependency Matrix (docs/method.md §2) and the Influence Encoder (§3, Eq. 15-18)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from unlearnrec.data.graph import normalized_adjacency, propagate
from unlearnrec.data.interactions import Interactions

Degrees = tuple[np.ndarray, np.ndarray]


def build_idm(
    edges: Interactions, device: torch.device | str = "cpu", degrees: Degrees | None = None
) -> torch.Tensor:
    """Â_Δ = D_Δ^-1/2 Ā_Δ D_Δ^-1/2 of the request edges alone (§2): (N x N) sparse CSR, O(|E_Δ| + N).

    Degrees are counted inside the IDM; nodes untouched by the request are isolated (zero rows).
    ``degrees`` = (user degrees, item degrees) of the training graph normalise by those instead
    (``idm_norm = "graph"``, not the paper's): an edge then weighs 1/sqrt(d_u d_i) whatever the
    request's size.
    """
    return normalized_adjacency(
        edges.users, edges.items, edges.num_users, edges.num_items, device=device, degrees=degrees
    )


def local_idm(
    edges: Interactions, device: torch.device | str = "cpu", degrees: Degrees | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(nodes (S,), Â_Δ restricted to them (S x S)): the IDM on the S nodes the request touches.

    Every other row and column of Â_Δ is zero, so H^l (l >= 1) and W^l vanish outside S and
    only these rows need propagating (the cost of Ours(0) then scales with |E_Δ|, not N).
    Node ids are global (users first, items offset by ``num_users``), sorted. ``degrees``: as
    :func:`build_idm`.
    """
    su, lu = np.unique(edges.users, return_inverse=True)
    si, li = np.unique(edges.items, return_inverse=True)
    local = None if degrees is None else (np.asarray(degrees[0])[su], np.asarray(degrees[1])[si])
    sub = normalized_adjacency(lu.ravel(), li.ravel(), len(su), len(si), device=device, degrees=local)
    nodes = torch.from_numpy(np.concatenate([su, si + edges.num_users])).to(device)
    return nodes, sub


def dropped_idm(
    edges: Interactions,
    keep: float,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
    degrees: Degrees | None = None,
) -> torch.Tensor:
    """A random edge-dropped view of Â_Δ for L_c (Eq. 23): each request edge is kept with
    probability ``keep``; kept entries keep the full IDM's normalisation, scaled by 1/keep.

    Dropping whole edges (both (u, i) and (i, u)) keeps the matrix symmetric, which
    :func:`~unlearnrec.data.graph.propagate` relies on. ``degrees``: as :func:`build_idm`.
    """
    nu, ni = edges.num_users, edges.num_items
    if degrees is None:  # the full IDM's degrees, not the kept ones
        degrees = (np.bincount(edges.users, minlength=nu), np.bincount(edges.items, minlength=ni))
    mask = torch.rand(len(edges), generator=generator).numpy() < keep
    w = np.full(int(mask.sum()), 1.0 / keep)
    return normalized_adjacency(edges.users[mask], edges.items[mask], nu, ni, w, device, degrees)


INFLUENCE_ON = ("both", "items", "hubs")


def hub_mask(idm: torch.Tensor) -> torch.Tensor:
    """(N,) bool: the nodes ``influence_on = "hubs"`` moves, from a request's IDM (sparse CSR).

    Per request edge, the endpoint with more request edges (both on a tie); a node is moved if it is
    chosen by at least one of its edges, i.e. its request degree is at least the smallest request
    degree among its request neighbours. Nodes outside the request are False.
    """
    crow, col = idm.crow_indices(), idm.col_indices()
    deg = crow[1:] - crow[:-1]
    n = deg.numel()
    if col.numel() == 0:
        return torch.zeros(n, dtype=torch.bool, device=deg.device)
    rows = torch.repeat_interleave(torch.arange(n, device=deg.device), deg)
    big = torch.iinfo(deg.dtype).max
    least = torch.full((n,), big, dtype=deg.dtype, device=deg.device)
    least = least.scatter_reduce(0, rows, deg[col], reduce="amin")
    return (deg > 0) & (deg >= least)


class IdentityMLP(nn.Module):
    """Eq. 18's MLP: two layers x ↦ LeakyReLU_0.99(x W + b), W = I and b = 0 at start.

    It is the identity on non-negative inputs at initialisation (and scales negative inputs
    by 0.99² at most). Frozen during pre-training, trained during fine-tuning.
    """

    def __init__(self, dim: int, layers: int = 2, negative_slope: float = 0.99):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(dim, dim) for _ in range(layers))
        self.act = nn.LeakyReLU(negative_slope)
        with torch.no_grad():
            for lin in self.layers:
                lin.weight.copy_(torch.eye(dim))
                lin.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for lin in self.layers:
            x = self.act(lin(x))
        return x


class InfluenceEncoder(nn.Module):
    """The IE (§3): trainable H⁰ (N, d) (init 0) and η (N, 1) (init ``eta_init``), a frozen MLP.

    Given the IDM Â_Δ, the layer-0 table E⁰ (N, d) and the fixed final embeddings Ē (N, d) of
    the trained model, :meth:`forward` returns Ẽ⁰ = E⁰ + MLP(ΔE⁰) (Eq. 18), with
    ΔE⁰ = H̄ - α W^(L) (Eq. 17), H̄ the readout of H^l = Â_Δ H^(l-1) (Eq. 15) and
    W^l = Â_Δ W^(l-1), W⁰ = η ⊙ Ē (Eq. 16).

    ``influence_on = "items"`` (our variant, not the paper's) writes ΔE⁰ of the request into its
    items' rows only: the request's users (ids below ``num_users``) get what a node outside the
    request gets (H⁰ under a layer-0 readout, else nothing), so forgetting an edge moves the item
    away from its users rather than rewriting the users' whole ranking. ``"hubs"`` (also ours,
    experimental) writes it into the rows :func:`hub_mask` picks: per request edge the endpoint with
    more request edges (docs/RESULTS.md, "Where the forgetting goes"). ``"both"`` is Eq. 15-17.
    """

    def __init__(
        self,
        num_nodes: int,
        dim: int,
        layers: int = 3,
        alpha: float = 0.1,
        eta_init: float = 0.002,
        readout: str = "sum",
        readout_layer0: bool = True,
        num_users: int | None = None,
        influence_on: str = "both",
    ):
        super().__init__()
        if readout not in ("sum", "last"):
            raise ValueError(f"readout must be 'sum' or 'last', got {readout!r}")
        if influence_on not in INFLUENCE_ON:
            raise ValueError(f"influence_on must be one of {', '.join(INFLUENCE_ON)}, got {influence_on!r}")
        if influence_on == "items" and num_users is None:
            raise ValueError("influence_on = 'items' needs num_users (users are ids 0..num_users-1)")
        self.num_nodes, self.dim, self.layers = int(num_nodes), int(dim), int(layers)
        self.alpha = float(alpha)
        self.readout = readout
        self.readout_layer0 = bool(readout_layer0)
        self.num_users = None if num_users is None else int(num_users)
        self.influence_on = influence_on
        self.h0 = nn.Parameter(torch.zeros(self.num_nodes, self.dim))
        self.eta = nn.Parameter(torch.full((self.num_nodes, 1), float(eta_init)))
        self.mlp = IdentityMLP(self.dim)
        self.mlp.requires_grad_(False)

    def h_layers(self, idm: torch.Tensor, h0: torch.Tensor | None = None) -> list[torch.Tensor]:
        """[H⁰, H¹, ..., H^L] with H^l = Â_Δ H^(l-1) (Eq. 15)."""
        out = [self.h0 if h0 is None else h0]
        for _ in range(self.layers):
            out.append(propagate(idm, out[-1]))
        return out

    def h_readout(self, layers: list[torch.Tensor]) -> torch.Tensor:
        """H̄: Σ_l H^l (``sum``; layer 0 only with ``readout_layer0``) or H^L (``last``)."""
        if self.readout == "last":
            return layers[-1]
        start = 0 if self.readout_layer0 else 1
        return torch.stack(layers[start:]).sum(0) if len(layers) - start > 1 else layers[start]

    def eta_term(self, idm: torch.Tensor, e_bar: torch.Tensor) -> torch.Tensor:
        """W^(L): W⁰ = η ⊙ Ē with Ē fixed (detached), W^l = Â_Δ W^(l-1) (Eq. 16)."""
        w = self.eta * e_bar.detach()
        for _ in range(self.layers):
            w = propagate(idm, w)
        return w

    def delta(
        self, idm: torch.Tensor, e_bar: torch.Tensor, layers: list[torch.Tensor] | None = None
    ) -> torch.Tensor:
        """ΔE⁰ = H̄ - α W^(L) (Eq. 17), (N, d)."""
        layers = self.h_layers(idm) if layers is None else layers
        out = self.h_readout(layers) - self.alpha * self.eta_term(idm, e_bar)
        return self._restrict(out, None, idm, self.h0)

    def outside_delta(self) -> torch.Tensor | None:
        """ΔE⁰ of the nodes no request edge touches: H⁰ under a readout that includes layer 0,
        else zero (None)."""
        if self.readout == "sum" and self.readout_layer0:
            return self.h0
        return None

    def delta_local(self, nodes: torch.Tensor, sub_idm: torch.Tensor, e_bar: torch.Tensor) -> torch.Tensor:
        """ΔE⁰ (Eq. 15-17) on the request's nodes only (S, d), from :func:`local_idm`'s output;
        equal to ``delta(idm, e_bar)[nodes]``."""
        h0 = self.h0[nodes]
        layers = [h0]
        for _ in range(self.layers):
            layers.append(propagate(sub_idm, layers[-1]))  # Eq. 15
        w = self.eta[nodes] * e_bar[nodes].detach()  # Eq. 16
        for _ in range(self.layers):
            w = propagate(sub_idm, w)
        out = self.h_readout(layers) - self.alpha * w  # Eq. 17
        return self._restrict(out, nodes, sub_idm, h0)

    def _restrict(
        self, out: torch.Tensor, nodes: torch.Tensor | None, idm: torch.Tensor, h0: torch.Tensor
    ) -> torch.Tensor:
        """ΔE⁰ ``out`` of the rows ``nodes`` (global ids, None: every node; ``idm`` over the same rows,
        ``h0`` their H⁰) under ``influence_on``: the rows the rule does not move get what an untouched
        node gets (H⁰ under a layer-0 readout, else zero). ``"both"`` moves every row."""
        if self.influence_on == "both":
            return out
        if self.influence_on == "items":  # the request's users as untouched nodes
            ids = torch.arange(out.shape[0], device=out.device) if nodes is None else nodes
            moved = ids >= self.num_users
        else:  # "hubs"
            moved = hub_mask(idm)
        return torch.where(moved[:, None], out, h0 if self.outside_delta() is not None else 0.0)

    def delta_full(self, nodes: torch.Tensor, sub_idm: torch.Tensor, e_bar: torch.Tensor) -> torch.Tensor:
        """ΔE⁰ (N, d) assembled from :meth:`delta_local` and :meth:`outside_delta`."""
        out = self.outside_delta()
        out = torch.zeros_like(self.h0) if out is None else out.clone()
        out[nodes] = self.delta_local(nodes, sub_idm, e_bar)
        return out

    def base(self, e0: torch.Tensor) -> torch.Tensor:
        """Ẽ⁰ of the nodes outside any request, E⁰ + MLP(outside ΔE⁰) (N, d): request-independent,
        so :meth:`serve` can reuse it (cache it per model)."""
        out = self.outside_delta()
        return e0 + (self.mlp(out) if out is not None else self.mlp(torch.zeros_like(e0[:1])))

    def serve(
        self,
        nodes: torch.Tensor,
        sub_idm: torch.Tensor,
        e0: torch.Tensor,
        e_bar: torch.Tensor,
        base: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Ẽ⁰ (N, d) of Eq. 18 for one request, computing only the request's rows: Ours(0).

        Equal to ``forward(build_idm(edges), e0, e_bar)``; ``base`` is :meth:`base` of ``e0``.
        """
        out = (self.base(e0) if base is None else base).clone()
        out[nodes] = e0[nodes] + self.mlp(self.delta_local(nodes, sub_idm, e_bar))
        return out

    def forward(
        self,
        idm: torch.Tensor,
        e0: torch.Tensor,
        e_bar: torch.Tensor,
        layers: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Ẽ⁰ = E⁰ + MLP(ΔE⁰) (Eq. 18), (N, d)."""
        return e0 + self.mlp(self.delta(idm, e_bar, layers))
