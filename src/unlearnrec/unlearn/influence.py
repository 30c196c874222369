# long file: the Hessian-vector product and three inverse-Hessian solvers share checks (GIF, CEU)
"""Influence functions on GNN recommenders: Hessian-vector products and inverse-Hessian solvers.

The parameters are the layer-0 embeddings θ = E⁰ (N x d); every vector below has that shape.
The training objective is the mean per-triple loss over a fixed set of BPR triples (u, i, j),
one fixed negative per training edge::

    L(θ) = 1/|E| Σ_{(u,i,j)} [ -log σ(ŷ_ui - ŷ_uj) + reg/2 (|θ_u|² + |θ_i|² + |θ_j|²) ] (+ SSL)

which is what ``Backbone.loss`` computes on a batch (a batch mean), so the backbone's own loss
is used unchanged and any backbone works. Self-supervised backbones draw random views from the
``generator``; every evaluation here uses a generator freshly seeded with the same seed, so the
views are held fixed during one estimate (the loss is then a deterministic function of θ).

Hessian-vector products go by double backward through the sparse propagation (never a dense
Hessian): the gradient graph of the Hessian sample is built once and each product is one more
backward through it. The solvers are pure functions of an ``hvp(v)`` callable:
:func:`neumann_solve` (the LiSSA / Neumann series used by GIF) and :func:`conjugate_gradient`
(CEU). Both solve (H + λI) x = v; the damping λ keeps them stable where the (non-convex) BPR
Hessian has tiny or negative eigenvalues.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from unlearnrec.backbones.base import Backbone, Batch
from unlearnrec.data.graph import Graph
from unlearnrec.data.interactions import Interactions
from unlearnrec.data.sampling import sample_negatives
from unlearnrec.errors import ConfigError

log = logging.getLogger(__name__)

HVP = Callable[[torch.Tensor], torch.Tensor]


# ------------------------------------------------------------------------------------ triples
@dataclass(frozen=True)
class Triples:
    """Fixed BPR triples: users, positive items, negative items (int64 arrays of equal length)."""

    users: np.ndarray
    pos: np.ndarray
    neg: np.ndarray

    def __len__(self) -> int:
        return len(self.users)

    def subset(self, index: np.ndarray) -> Triples:
        """The triples at ``index`` (a boolean mask or integer positions)."""
        return Triples(self.users[index], self.pos[index], self.neg[index])

    def batch(self, device: torch.device | str = "cpu") -> Batch:
        return Batch(
            *(torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in (self.users, self.pos, self.neg))
        )


def fixed_triples(train: Interactions, seed: int) -> Triples:
    """One triple per training edge, in the canonical edge order, with a seeded uniform negative."""
    rng = np.random.default_rng(seed)
    return Triples(train.users.copy(), train.items.copy(), sample_negatives(train, train.users, rng))


def sample_triples(triples: Triples, size: int, seed: int) -> Triples:
    """A uniform sample of ``size`` triples without replacement (all of them if size <= 0 or too big)."""
    if size <= 0 or size >= len(triples):
        return triples
    idx = np.sort(np.random.default_rng(seed).choice(len(triples), size=size, replace=False))
    return triples.subset(idx)


def locate_triples(triples: Triples, num_items: int, edges: Interactions) -> np.ndarray:
    """Boolean mask of the triples whose (user, positive) pair is one of ``edges``."""
    keys = triples.users * num_items + triples.pos
    q = np.sort(edges.users * num_items + edges.items)
    pos = np.clip(np.searchsorted(q, keys), 0, max(len(q) - 1, 0))
    return (q[pos] == keys) if len(q) else np.zeros(len(triples), dtype=bool)


def neighbourhood(graph: Graph, nodes: np.ndarray, hops: int) -> np.ndarray:
    """Boolean mask (N,) of the nodes within ``hops`` hops of ``nodes`` in ``graph``, in O(hops·nnz)."""
    n = graph.num_nodes
    mask = np.zeros(n, dtype=bool)
    mask[np.asarray(nodes, dtype=np.int64)] = True
    if hops <= 0:
        return mask
    indptr = graph.adj.crow_indices().cpu().numpy()
    cols = graph.adj.col_indices().cpu().numpy()
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(indptr))
    for _ in range(hops):
        grown = mask.copy()
        grown[cols[mask[rows]]] = True
        if grown.sum() == mask.sum():
            break
        mask = grown
    return mask


def affected_triples(triples: Triples, num_users: int, affected: np.ndarray) -> np.ndarray:
    """Mask of the triples whose user, positive or negative node is in the ``affected`` mask (N,)."""
    return affected[triples.users] | affected[num_users + triples.pos] | affected[num_users + triples.neg]


# ------------------------------------------------------------------------------- loss, grads
PLAIN_CHUNK = 131072  # triples per gradient chunk of a batch-independent backbone (memory bound)


def batch_dependent(backbone: Backbone) -> bool:
    """True if the backbone's loss is not a plain mean of per-triple terms (an SSL term with
    in-batch negatives): it must then be evaluated in training-sized batches. A plain backbone is
    evaluated in as few pieces as memory allows, each piece costing one full propagation."""
    cls = type(backbone)
    return cls.ssl_loss is not Backbone.ssl_loss or cls.loss is not Backbone.loss


def _generator(seed: int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(int(seed))


def triple_loss(
    backbone: Backbone, graph: Graph, triples: Triples, e0: torch.Tensor, seed: int
) -> torch.Tensor:
    """Mean per-triple training loss (the backbone's ``total``) with views drawn from a fixed seed."""
    batch = triples.batch(e0.device)
    return backbone.loss(graph, batch, e0=e0, generator=_generator(seed))["total"]


def loss_gradient(
    backbone: Backbone,
    graph: Graph,
    triples: Triples,
    theta: torch.Tensor,
    *,
    weight: float,
    seed: int,
    chunk_size: int = 65536,
) -> torch.Tensor:
    """∇_θ of ``weight`` x Σ_triples l_t(θ; graph) -> (N, d), in chunks of triples (bounded memory).

    ``chunk_size`` is the batch of a batch-dependent (SSL) backbone; plain ones use larger chunks.
    """
    grad = torch.zeros_like(theta)
    if len(triples) == 0:
        return grad
    if not batch_dependent(backbone):
        chunk_size = max(chunk_size, PLAIN_CHUNK)
    for s in range(0, len(triples), chunk_size):
        part = triples.subset(slice(s, s + chunk_size))
        x = theta.detach().requires_grad_(True)
        with torch.enable_grad():
            loss = triple_loss(backbone, graph, part, x, seed) * (len(part) * weight)
            (g,) = torch.autograd.grad(loss, x)
        grad += g
    return grad


def make_hvp(loss_fn: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor) -> HVP:
    """``hvp(v) = ∇²L(θ) v`` by double backward (Pearlmutter), never forming the Hessian.

    ``loss_fn(θ) -> scalar`` must be deterministic in θ. The first-order gradient graph is built
    once here and kept; each call is one backward through it (O(cost of one training step)).
    """
    x = theta.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        loss = loss_fn(x)
        (g,) = torch.autograd.grad(loss, x, create_graph=True)

    def hvp(v: torch.Tensor) -> torch.Tensor:
        if not g.requires_grad:  # a loss linear in θ
            return torch.zeros_like(v)
        with torch.enable_grad():
            (h,) = torch.autograd.grad(g, x, grad_outputs=v, retain_graph=True)
        return h.detach()

    return hvp


# ------------------------------------------------------------------------------------ solvers
@dataclass
class SolveInfo:
    """What an inverse-Hessian solve did: HVPs used, relative residuals |v - (H+λ)x| / |v|."""

    iterations: int = 0
    residual_norms: list[float] = field(default_factory=list)
    converged: bool = False
    best_iteration: int = 0
    curvature: float | None = None  # p·(H+λI)p / p·p of a non-positive direction that stopped CG

    @property
    def final_residual(self) -> float:
        return self.residual_norms[self.best_iteration] if self.residual_norms else float("nan")

    def as_dict(self) -> dict:
        return {
            "iterations": self.iterations,
            "converged": self.converged,
            "final_residual": self.final_residual,
            "best_iteration": self.best_iteration,
            "residual_norms": [round(r, 6) for r in self.residual_norms],
        }


def dot(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() * b.double()).sum())


def norm(a: torch.Tensor) -> float:
    return math.sqrt(max(dot(a, a), 0.0))


def neumann_solve(
    hvp: HVP, v: torch.Tensor, iterations: int, scale: float, damping: float = 0.0, tol: float = 0.0
) -> tuple[torch.Tensor, SolveInfo]:
    """x ≈ (H + λI)⁻¹ v by the Neumann / LiSSA series, x = 1/s Σ_k (I - (H + λI)/s)^k v.

    Written as the Richardson iteration x ← x + r / s with r = v - (H + λI) x, so the residual
    of every iterate is known for free (one HVP per iteration). Converges when the eigenvalues
    of (H + λI)/s lie in (0, 2); ``scale`` s must exceed the largest. The iterate with the
    smallest residual is returned (a non-convex H can make the series drift away later).
    """
    if scale <= 0:
        raise ConfigError(f"Neumann scale must be > 0 (got {scale})")
    vn = norm(v)
    info = SolveInfo()
    x = torch.zeros_like(v)
    if vn == 0:
        info.converged = True
        info.residual_norms.append(0.0)
        return x, info
    r = v.clone()
    best, best_res = x.clone(), 1.0
    info.residual_norms.append(1.0)
    for t in range(iterations):
        x = x + r / scale
        r = v - hvp(x) - damping * x
        res = norm(r) / vn
        info.iterations = t + 1
        info.residual_norms.append(res)
        if not math.isfinite(res):
            log.warning("Neumann series diverged at iteration %d (raise scale or damping)", t + 1)
            break
        if res < best_res:
            best, best_res, info.best_iteration = x.clone(), res, t + 1
        if res <= tol:
            info.converged = True
            break
    return best, info


def conjugate_gradient(
    hvp: HVP, v: torch.Tensor, iterations: int, damping: float = 0.0, tol: float = 1e-6
) -> tuple[torch.Tensor, SolveInfo]:
    """x ≈ (H + λI)⁻¹ v by conjugate gradient (one HVP per iteration), stopping at |r|/|v| <= tol.

    CG needs H + λI positive definite; a direction of non-positive curvature stops it early
    (the iterate so far is returned), as a truncated-Newton method does.
    """
    vn = norm(v)
    info = SolveInfo()
    x = torch.zeros_like(v)
    info.residual_norms.append(1.0 if vn else 0.0)
    if vn == 0:
        info.converged = True
        return x, info
    r = v.clone()
    p = r.clone()
    rr = dot(r, r)
    best, best_res = x, 1.0
    for t in range(iterations):
        hp = hvp(p) + damping * p
        curv = dot(p, hp)
        if curv <= 0 or not math.isfinite(curv):
            log.warning("CG met non-positive curvature at iteration %d (raise damping)", t + 1)
            info.curvature = curv / max(dot(p, p), 1e-300)
            break
        alpha = rr / curv
        x = x + alpha * p
        r = r - alpha * hp
        rr_new = dot(r, r)
        res = math.sqrt(rr_new) / vn
        info.iterations = t + 1
        info.residual_norms.append(res)
        if res < best_res:  # CG's residual is not monotone; keep the best iterate
            best, best_res, info.best_iteration = x, res, t + 1
        if res <= tol:
            info.converged = True
            break
        p = r + (rr_new / rr) * p
        rr = rr_new
    return best, info


def largest_eigenvalue(hvp: HVP, like: torch.Tensor, iterations: int = 20, seed: int = 0) -> float:
    """|λ_max| of H by power iteration on HVPs (used to pick the Neumann scale)."""
    g = _generator(seed)
    x = torch.randn(like.shape, generator=g, dtype=like.dtype).to(like.device)
    x = x / max(norm(x), 1e-30)
    lam = 0.0
    for _ in range(max(iterations, 1)):
        y = hvp(x)
        lam = abs(dot(x, y))
        n = norm(y)
        if n == 0:
            return 0.0
        x = y / n
    return lam


def smallest_eigenvalue(
    hvp: HVP, like: torch.Tensor, lam_max: float, iterations: int = 20, seed: int = 0
) -> float:
    """λ_min of H by power iteration on |λ_max| I - H (whose top eigenvalue is |λ_max| - λ_min)."""
    mu = largest_eigenvalue(lambda x: lam_max * x - hvp(x), like, iterations, seed + 1)
    return lam_max - mu


def lanczos_extremes(
    hvp: HVP, like: torch.Tensor, iterations: int = 30, seed: int = 0
) -> tuple[float, float]:
    """(λ_min, λ_max) of a symmetric H by ``iterations`` Lanczos steps (full reorthogonalisation).

    Far better than power iteration at the smallest eigenvalue of an indefinite Hessian whose
    spectrum crowds near 0; keeps ``iterations`` vectors of θ's shape. Ritz values lie inside
    the spectrum, so |λ_min| is (slightly) underestimated.
    """
    g = _generator(seed)
    q = torch.randn(like.shape, generator=g, dtype=like.dtype).to(like.device)
    q = q / max(norm(q), 1e-30)
    basis, alphas, betas = [q], [], []
    q_prev, beta = torch.zeros_like(q), 0.0
    for k in range(max(iterations, 1)):
        w = hvp(q) - beta * q_prev
        alpha = dot(w, q)
        alphas.append(alpha)
        for b in basis:  # full reorthogonalisation: a few vectors, keeps the Ritz values honest
            w = w - dot(w, b) * b
        beta = norm(w)
        if k == iterations - 1 or beta <= 1e-10 * max(abs(alpha), 1e-30):
            break
        betas.append(beta)
        q_prev, q = q, w / beta
        basis.append(q)
    t = np.diag(alphas) + np.diag(betas[: len(alphas) - 1], 1) + np.diag(betas[: len(alphas) - 1], -1)
    ev = np.linalg.eigvalsh(t)
    return float(ev[0]), float(ev[-1])


def damping_for(
    hvp: HVP, like: torch.Tensor, relative: float, iterations: int, seed: int, psd_shift: bool
) -> tuple[float, float, float]:
    """(λ, λ_max, λ_min): the absolute damping λ = relative·|λ_max| (+ 1.5·max(0, -λ_min) if ``psd_shift``).

    Both extremes come from one Lanczos run. The BPR Hessian of a bilinear model is indefinite;
    the shift makes H + λI positive definite, which CG needs and along whose negative directions
    the Neumann series would diverge (the 1.5 margin covers Lanczos' underestimate of |λ_min|).
    """
    lam_min, lam_max = lanczos_extremes(hvp, like, iterations, seed)
    scale = max(abs(lam_max), abs(lam_min))
    damping = relative * scale + (1.5 * max(0.0, -lam_min) if psd_shift else 0.0)
    return damping, lam_max, lam_min


# ------------------------------------------------------------------------ shared by GIF / CEU
def hessian_hvp(
    backbone: Backbone, graph: Graph, sample: Triples, theta: torch.Tensor, *, seed: int, batch_size: int
) -> HVP:
    """HVP of the mean training loss over ``sample`` on ``graph`` at θ.

    The sample is cut into training-sized batches whose batch-mean losses are averaged (the
    training objective of a mini-batch SSL backbone, whose in-batch negatives depend on the
    batch); every batch draws its views from the same fixed seed. All batches' gradient graphs
    are kept for the whole solve: this is the memory cost of influence methods. A plain
    (batch-independent) backbone takes the sample as one batch: one propagation per HVP.
    """
    n = len(sample)
    if not batch_dependent(backbone):
        batch_size = max(n, 1)

    def loss_fn(x: torch.Tensor) -> torch.Tensor:
        total = x.new_zeros(())
        for s in range(0, n, batch_size):
            part = sample.subset(slice(s, s + batch_size))
            total = total + triple_loss(backbone, graph, part, x, seed) * (len(part) / n)
        return total

    return make_hvp(loss_fn, theta)


def with_embeddings(model, theta: torch.Tensor, graph: Graph):
    """A new ``TrainedModel``: a copy of ``model``'s backbone with E⁰ = θ, on ``graph`` (input untouched)."""
    import copy

    backbone = copy.deepcopy(model.backbone)
    with torch.no_grad():
        backbone.e0.copy_(theta)
    return model.derive(backbone, graph)


def request_endpoints(edges: Interactions) -> np.ndarray:
    """Node ids (users, then items offset by |U|) touched by the request edges."""
    return np.unique(np.concatenate([edges.users, edges.items + edges.num_users]))
