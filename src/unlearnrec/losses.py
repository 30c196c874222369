"""Pure loss functions (tensors in, scalar tensor out)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bpr_loss(pos_scores: torch.Tensor, neg_scores: torch.Tensor, total: int | None = None) -> torch.Tensor:
    """Mean of -log σ(ŷ_ui - ŷ_uj) over the batch (B,) -> scalar. Uses logsigmoid for stability.

    ``total``: the sum is divided by it instead of B (a part of a larger batch, whose mean is the
    parts' sum).
    """
    if total is None:
        return -F.logsigmoid(pos_scores - neg_scores).mean()
    return -F.logsigmoid(pos_scores - neg_scores).sum() / max(total, 1)


def l2_reg(*rows: torch.Tensor, batch_size: int) -> torch.Tensor:
    """½ Σ ||row||² / B over the batch's layer-0 rows (the LightGCN convention)."""
    return 0.5 * sum(r.pow(2).sum() for r in rows) / max(batch_size, 1)


def info_nce(
    view1: torch.Tensor, view2: torch.Tensor, temperature: float, anchors: slice | None = None
) -> torch.Tensor:
    """InfoNCE between matching rows of two views (B, d), cosine similarity, in-batch negatives.

    Row k of ``view1`` is the positive of row k of ``view2``; every other row is a negative.
    ``anchors``: only these rows of ``view1`` are anchors (still against all B rows of ``view2``),
    their losses summed and divided by B: the terms of disjoint anchor slices covering the rows
    add up to the full InfoNCE (data-parallel parts).
    """
    # 1/τ scales the (B, d) operand, not the (B, B) logits: the same logits for a B-fold smaller pass
    # (and its backward); B x B passes are a visible share of an SSL step (issue 3)
    if anchors is not None:
        n = view1.shape[0]
        z1 = F.normalize(view1[anchors], dim=1) / temperature
        z2 = F.normalize(view2, dim=1)
        labels = torch.arange(n, device=z1.device)[anchors]
        return F.cross_entropy(z1 @ z2.T, labels, reduction="sum") / max(n, 1)
    z1 = F.normalize(view1, dim=1) / temperature
    z2 = F.normalize(view2, dim=1)
    logits = z1 @ z2.T
    labels = torch.arange(z1.shape[0], device=z1.device)
    return F.cross_entropy(logits, labels)


def unlearning_loss(forgotten_scores: torch.Tensor, total: int | None = None) -> torch.Tensor:
    """L_u (Eq. 20): mean of -log σ(-ŷ'_ui) over forgotten pairs: pushes them to score like negatives.

    ``total``: divide the sum by it instead of the number of pairs (a part of a larger chunk).
    """
    if forgotten_scores.numel() == 0:
        return forgotten_scores.sum()
    if total is not None:
        return -F.logsigmoid(-forgotten_scores).sum() / max(total, 1)
    return -F.logsigmoid(-forgotten_scores).mean()


def holding_loss(scores: torch.Tensor, ceiling: torch.Tensor) -> torch.Tensor:
    """Mean squared hinge relu(ŷ - c)² over pairs (issue 25's recovery hold): zero while every score
    stays at or below its ceiling ``c`` (fixed, no gradient), so it only resists a rise."""
    if scores.numel() == 0:
        return scores.sum()
    return F.relu(scores - ceiling.detach()).pow(2).mean()


def preserving_loss(
    target_scores: torch.Tensor, scores: torch.Tensor, temperature: float, rows: slice | None = None
) -> torch.Tensor:
    """L_p (Eq. 21-22): squared L2 between the log-softmax distributions over the batch's positives.

    ``target_scores`` come from the original (fixed) model and carry no gradient. ``rows``: sum
    only these pairs' squared differences (the distributions are still over all pairs), so that
    disjoint slices add up to the full loss.
    """
    log_p_target = F.log_softmax(target_scores.detach() / temperature, dim=-1)
    log_p = F.log_softmax(scores / temperature, dim=-1)
    if rows is not None:
        return (log_p[..., rows] - log_p_target[..., rows]).pow(2).sum()
    return (log_p - log_p_target).pow(2).sum()
