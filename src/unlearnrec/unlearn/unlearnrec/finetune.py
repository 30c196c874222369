"""Ours(k): fine-tuning the unlearned model for k epochs on E_r (docs/method.md §5)."""

from __future__ import annotations

import copy
import math

import numpy as np
import torch

from unlearnrec.backbones.base import Backbone, Batch
from unlearnrec.data.graph import Graph
from unlearnrec.data.interactions import Interactions
from unlearnrec.train.loop import FitResult, TrainConfig, fit
from unlearnrec.unlearn.unlearnrec.config import UnlearnRecConfig
from unlearnrec.unlearn.unlearnrec.encoder import IdentityMLP
from unlearnrec.unlearn.unlearnrec.pretrain import auxiliary_terms, forgotten_chunks


def finetune(
    backbone: Backbone,
    residual: Graph,
    mlp: IdentityMLP,
    delta: torch.Tensor,
    e_bar: torch.Tensor,
    forgotten: Interactions,
    config: UnlearnRecConfig,
    seed: int = 0,
) -> FitResult:
    """Train the layer-0 table E⁰ (``backbone.e0``) and a copy of the MLP for
    ``config.finetune_epochs`` epochs on E_r with L_model + λ_u L_u + λ_p L_p (no L_c).

    ``delta``: ΔE⁰ (N, d) of Eq. 17, fixed (H⁰ and η are not trained); ``e_bar``: the original
    model's fixed Ē (N, d) (the L_p target). On return ``backbone.e0`` holds the final
    Ẽ⁰ = E⁰ + MLP(ΔE⁰) (Eq. 18), so the backbone alone is the unlearned model. ``backbone`` must
    be a copy owned by the caller; ``mlp`` is copied, never modified.
    """
    mlp = copy.deepcopy(mlp).to(delta.device)
    mlp.requires_grad_(True)
    backbone.requires_grad_(False)
    backbone.e0.requires_grad_(True)
    delta = delta.detach()
    nu = residual.num_users
    n_batches = max(math.ceil(len(residual.interactions) / config.batch_size), 1)
    chunks = forgotten_chunks(forgotten, n_batches, np.random.default_rng(seed))
    step = [0]

    def loss_fn(batch: Batch, gen: torch.Generator) -> dict[str, torch.Tensor]:
        e0_tilde = backbone.e0 + mlp(delta)  # Eq. 18 with trainable E⁰ and MLP
        terms = backbone.loss(residual, batch, e0=e0_tilde, generator=gen)  # Eq. 19
        total = terms["total"]
        if config.use_lu or config.use_lp:
            out = backbone.propagate(residual, e0_tilde)
            aux = auxiliary_terms(out, nu, batch, forgotten, chunks[step[0] % len(chunks)], e_bar, config)
            if "unlearn" in aux:
                total = total + config.lambda_u * aux["unlearn"]
            if "preserve" in aux:
                total = total + config.lambda_p * aux["preserve"]
            terms.update(aux)
        step[0] += 1
        terms["total"] = total
        return terms

    k = config.finetune_epochs
    recipe = TrainConfig(
        epochs=k,
        batch_size=config.batch_size,
        lr=config.finetune_lr,
        eval_every=max(k, 1),
        patience=0,
        seed=seed,
    )
    res = fit(backbone, residual, recipe, loss_fn=loss_fn, params=[backbone.e0, *mlp.parameters()])
    with torch.no_grad():
        backbone.e0.copy_(backbone.e0 + mlp(delta))
    backbone.requires_grad_(True)
    return res
