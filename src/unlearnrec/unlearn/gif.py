"""GIF, Graph Influence Function (Wu et al., WWW 2023), ported to BPR(+SSL) GNN recommenders.

θ = E⁰ (N x d). Removing E_Δ changes (a) the loss terms of the forgotten edges, which vanish, and
(b) through the propagation over Â_r, the terms of every triple touching a node within L hops
of the request (L = the backbone's layers). With the original optimum θ̂ (∇L(θ̂) = 0), one
influence step towards the optimum of the residual objective is

    θ' = θ̂ + H⁻¹ ∇_θ [ Σ_{t ∈ A} l_t(θ̂; Â) - Σ_{t ∈ A \\ E_Δ} l_t(θ̂; Â_r) ] / |E|    (GIF Eq. 4-6)

where A are the affected triples and H the Hessian of the (mean) training loss at θ̂ on the
original graph, estimated on a fixed sample of triples. H⁻¹v comes from the Neumann / LiSSA
series (:func:`unlearnrec.unlearn.influence.neumann_solve`). The new model is the backbone with
θ' propagated over the residual graph.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from unlearnrec.config import check_ranges
from unlearnrec.data.interactions import Interactions
from unlearnrec.errors import ConfigError
from unlearnrec.model import TrainedModel
from unlearnrec.unlearn import influence as inf
from unlearnrec.unlearn.base import Request, Unlearner

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GIFConfig:
    """GIF's knobs. ``damping`` and ``scale`` are relative to |λ_max(H)| (found by Lanczos),
    so one setting suits any dataset size: λ = damping·|λ_max|, s = scale·(|λ_max| + λ)."""

    iterations: int = 100  # Neumann terms (one HVP each)
    scale: float = 1.5  # > 1 for convergence
    damping: float = 0.01
    tol: float = 0.0  # stop when |r|/|v| <= tol (0: run all iterations)
    hessian_edges: int = 65536  # fixed triples sampled for H (0: all training edges)
    batch_size: int = 16384  # triples per loss evaluation of an SSL backbone (its in-batch size)
    hops: int = -1  # neighbourhood of the request whose terms change (-1: the backbone's layers)
    hessian: str = "original"  # H of the original loss on Â (GIF); "residual": of L_r on Â_r (a Newton step)
    lanczos_iterations: int = 30  # HVPs for the extreme eigenvalues of H (damping, scale)
    psd_shift: bool = True  # add max(0, -λ_min) to the damping: H + λI positive definite

    RANGES = {
        "iterations": "[0, 100000]",
        "scale": "> 1",
        "damping": ">= 0",
        "tol": ">= 0",
        "hessian_edges": ">= 0",
        "batch_size": ">= 1",
        "hops": "[-1, 64]",
        "lanczos_iterations": "[1, 10000]",
    }

    def __post_init__(self):
        check_ranges(self)
        if self.iterations < 0 or self.lanczos_iterations < 1:
            raise ConfigError("gif: iterations must be >= 0 and lanczos_iterations >= 1")
        if self.scale <= 1.0:
            raise ConfigError(
                f"gif: scale must be > 1 (got {self.scale}); the Neumann series diverges otherwise"
            )
        if self.hessian not in ("original", "residual"):
            raise ConfigError(f"gif: hessian must be 'original' or 'residual' (got '{self.hessian}')")
        if self.damping < 0 or self.tol < 0 or self.hessian_edges < 0 or self.batch_size <= 0:
            raise ConfigError("gif: damping, tol, hessian_edges must be >= 0 and batch_size > 0")


class GIF(Unlearner):
    """Influence-function unlearning with the L-hop neighbourhood terms and a Neumann H⁻¹v."""

    name = "gif"

    def __init__(self, config: GIFConfig = GIFConfig(), seed: int = 0):
        self.config = config
        self.seed = int(seed)

    def _forget(
        self, model: TrainedModel, train: Interactions, request: Request
    ) -> tuple[TrainedModel, dict]:
        cfg = self.config
        theta = model.backbone.e0.detach()
        if len(request.edges) == 0:
            return inf.with_embeddings(model, theta, model.graph), {"iterations": 0, "affected_edges": 0}
        backbone, graph = model.backbone, model.graph
        residual = graph.residual(request.edges)
        t0 = time.perf_counter()
        triples = inf.fixed_triples(graph.interactions, self.seed)
        forgotten = inf.locate_triples(triples, graph.num_items, request.edges)
        hops = int(getattr(backbone, "layers", 0)) if cfg.hops < 0 else cfg.hops
        affected_nodes = inf.neighbourhood(graph, inf.request_endpoints(request.edges), hops)
        affected = inf.affected_triples(triples, graph.num_users, affected_nodes)
        weight = 1.0 / len(triples)
        # v = ∇ [L_A(θ; Â) - L_{A∖E_Δ}(θ; Â_r)] / |E|  (GIF Eq. 6)
        v = inf.loss_gradient(
            backbone,
            graph,
            triples.subset(affected),
            theta,
            weight=weight,
            seed=self.seed,
            chunk_size=cfg.batch_size,
        )
        v -= inf.loss_gradient(
            backbone,
            residual,
            triples.subset(affected & ~forgotten),
            theta,
            weight=weight,
            seed=self.seed,
            chunk_size=cfg.batch_size,
        )
        t_grad = time.perf_counter() - t0
        if cfg.hessian == "original":
            sample = inf.sample_triples(triples, cfg.hessian_edges, self.seed)
            hvp = inf.hessian_hvp(backbone, graph, sample, theta, seed=self.seed, batch_size=cfg.batch_size)
        else:  # the residual objective's Hessian, scaled to the 1/|E| of v
            sample = inf.sample_triples(triples.subset(~forgotten), cfg.hessian_edges, self.seed)
            hvp_r = inf.hessian_hvp(
                backbone, residual, sample, theta, seed=self.seed, batch_size=cfg.batch_size
            )
            ratio = (len(triples) - int(forgotten.sum())) / len(triples)

            def hvp(p):
                return ratio * hvp_r(p)

        damping, lam_max, lam_min = inf.damping_for(
            hvp, theta, cfg.damping, cfg.lanczos_iterations, self.seed, cfg.psd_shift
        )
        scale = cfg.scale * (max(lam_max, 0.0) + damping)
        if scale <= 0:
            raise ConfigError("gif: the Hessian is zero on the sample; nothing to invert")
        x, solve = inf.neumann_solve(hvp, v, cfg.iterations, scale, damping, cfg.tol)
        new = inf.with_embeddings(model, theta + x, residual)  # θ' = θ̂ + H⁻¹v
        info = {
            **solve.as_dict(),
            "solver": "neumann",
            "lambda_max": lam_max,
            "lambda_min": lam_min,
            "damping_abs": damping,
            "scale_abs": scale,
            "hops": hops,
            "affected_nodes": int(affected_nodes.sum()),
            "affected_edges": int(affected.sum()),
            "hessian_edges": len(sample),
            "grad_norm": inf.norm(v),
            "update_norm": inf.norm(x),
            "theta_norm": inf.norm(theta),
            "gradient_seconds": t_grad,
            "solve_seconds": time.perf_counter() - t0 - t_grad,
        }
        log.info(
            "gif: %d edges, %d affected triples, %d HVPs, residual %.3g",
            len(request),
            info["affected_edges"],
            solve.iterations + cfg.lanczos_iterations,
            solve.final_residual,
        )
        return new, info


__all__ = ["GIF", "GIFConfig"]
