"""CEU, Certified Edge Unlearning (Wu et al., KDD 2023), ported to BPR(+SSL) GNN recommenders.

θ = E⁰ (N x d). One Newton step from the trained θ̂ towards the optimum of the residual
objective L_r(θ) = 1/|E_r| Σ_{t ∈ E_r} l_t(θ; Â_r). With ∇L(θ̂) = 0 the residual gradient is
-1/|E_r| Σ_{t ∈ E_Δ} ∇l_t(θ̂), the forgotten edges' own terms, so

    θ' = θ̂ + H_r⁻¹ ∇_θ Σ_{t ∈ E_Δ} l_t(θ̂; Â) / |E_r|  (+ b, b ~ N(0, σ²I))    (CEU Eq. 7, 11)

with H_r the Hessian of L_r at θ̂ (on a fixed sample of residual triples) and H_r⁻¹v by
conjugate gradient. The optional Gaussian b is CEU's certification noise (σ = 0: none). The
new model is the backbone with θ' propagated over the residual graph.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch

from unlearnrec.config import check_ranges
from unlearnrec.data.interactions import Interactions
from unlearnrec.errors import ConfigError
from unlearnrec.model import TrainedModel
from unlearnrec.unlearn import influence as inf
from unlearnrec.unlearn.base import Request, Unlearner

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CEUConfig:
    """CEU's knobs. ``damping`` is relative to |λ_max(H_r)| (Lanczos): λ = damping·|λ_max|."""

    iterations: int = 100  # CG iterations at most (one HVP each)
    damping: float = 0.01
    tol: float = 1e-3  # stop when |r|/|v| <= tol
    hessian_edges: int = 65536  # fixed residual triples sampled for H_r (0: all)
    batch_size: int = 16384  # triples per loss evaluation of an SSL backbone (its in-batch size)
    noise_std: float = 0.0  # certification noise σ added to every entry of θ'
    lanczos_iterations: int = 30  # HVPs for the extreme eigenvalues of H (damping, scale)
    psd_shift: bool = True  # add max(0, -λ_min) to the damping: H + λI positive definite

    RANGES = {
        "iterations": "[0, 100000]",
        "damping": ">= 0",
        "tol": ">= 0",
        "hessian_edges": ">= 0",
        "batch_size": ">= 1",
        "noise_std": ">= 0",
        "lanczos_iterations": "[1, 10000]",
    }

    def __post_init__(self):
        check_ranges(self)
        if self.iterations < 0 or self.lanczos_iterations < 1:
            raise ConfigError("ceu: iterations must be >= 0 and lanczos_iterations >= 1")
        if self.damping < 0 or self.tol < 0 or self.hessian_edges < 0 or self.batch_size <= 0:
            raise ConfigError("ceu: damping, tol, hessian_edges must be >= 0 and batch_size > 0")
        if self.noise_std < 0:
            raise ConfigError(f"ceu: noise_std must be >= 0 (got {self.noise_std})")


class CEU(Unlearner):
    """One Newton step on the forgotten edges' terms with a conjugate-gradient H⁻¹v."""

    name = "ceu"

    def __init__(self, config: CEUConfig = CEUConfig(), seed: int = 0):
        self.config = config
        self.seed = int(seed)

    def _forget(
        self, model: TrainedModel, train: Interactions, request: Request
    ) -> tuple[TrainedModel, dict]:
        cfg = self.config
        theta = model.backbone.e0.detach()
        if len(request.edges) == 0:
            return inf.with_embeddings(model, theta, model.graph), {"iterations": 0}
        backbone, graph = model.backbone, model.graph
        residual = graph.residual(request.edges)
        t0 = time.perf_counter()
        triples = inf.fixed_triples(graph.interactions, self.seed)
        forgotten = inf.locate_triples(triples, graph.num_items, request.edges)
        kept = triples.subset(~forgotten)
        # v = ∇ Σ_{E_Δ} l_t(θ̂; Â) / |E_r|  (CEU Eq. 7)
        v = inf.loss_gradient(
            backbone,
            graph,
            triples.subset(forgotten),
            theta,
            weight=1.0 / max(len(kept), 1),
            seed=self.seed,
            chunk_size=cfg.batch_size,
        )
        t_grad = time.perf_counter() - t0
        sample = inf.sample_triples(kept, cfg.hessian_edges, self.seed)
        hvp = inf.hessian_hvp(backbone, residual, sample, theta, seed=self.seed, batch_size=cfg.batch_size)
        damping, lam_max, lam_min = inf.damping_for(
            hvp, theta, cfg.damping, cfg.lanczos_iterations, self.seed, cfg.psd_shift
        )
        x, solve = inf.conjugate_gradient(hvp, v, cfg.iterations, damping, cfg.tol)
        restarts = 0
        while solve.curvature is not None and restarts < 3:
            # Lanczos underestimated |λ_min|: shift past the curvature CG found, and restart
            damping = 1.5 * (damping - solve.curvature)
            x, solve = inf.conjugate_gradient(hvp, v, cfg.iterations, damping, cfg.tol)
            restarts += 1
        theta_new = theta + x  # θ' = θ̂ + H_r⁻¹ v
        if cfg.noise_std > 0:  # CEU Eq. 11: θ' + b, b ~ N(0, σ²I)
            g = torch.Generator(device="cpu").manual_seed(self.seed + 1)
            theta_new = theta_new + cfg.noise_std * torch.randn(theta.shape, generator=g).to(theta)
        new = inf.with_embeddings(model, theta_new, residual)
        info = {
            **solve.as_dict(),
            "solver": "cg",
            "lambda_max": lam_max,
            "lambda_min": lam_min,
            "damping_abs": damping,
            "restarts": restarts,
            "forgotten_edges": int(forgotten.sum()),
            "hessian_edges": len(sample),
            "grad_norm": inf.norm(v),
            "update_norm": inf.norm(x),
            "theta_norm": inf.norm(theta),
            "noise_std": cfg.noise_std,
            "gradient_seconds": t_grad,
            "solve_seconds": time.perf_counter() - t0 - t_grad,
        }
        log.info(
            "ceu: %d edges, %d CG iterations, residual %.3g",
            len(request),
            solve.iterations,
            solve.final_residual,
        )
        return new, info


__all__ = ["CEU", "CEUConfig"]
