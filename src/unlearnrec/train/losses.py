"""Pure loss functions (tensors in, scalar tensor out)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bpr_loss(pos_scores: torch.Tensor, neg_scores: torch.Tensor) -> torch.Tensor:
    """Mean of -log σ(ŷ_ui - ŷ_uj) over the batch (B,) -> scalar. Uses logsigmoid for stability."""
    return -F.logsigmoid(pos_scores - neg_scores).mean()


def l2_reg(*rows: torch.Tensor, batch_size: int) -> torch.Tensor:
    """½ Σ ||row||² / B over the batch's layer-0 rows (the LightGCN convention)."""
    return 0.5 * sum(r.pow(2).sum() for r in rows) / max(batch_size, 1)


def info_nce(view1: torch.Tensor, view2: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE between matching rows of two views (B, d), cosine similarity, in-batch negatives.

    Row k of ``view1`` is the positive of row k of ``view2``; every other row is a negative.
    """
    # 1/τ scales the (B, d) operand, not the (B, B) logits: the same logits for a B-fold smaller pass
    # (and its backward); B x B passes are a visible share of an SSL step (issue 3)
    z1 = F.normalize(view1, dim=1) / temperature
    z2 = F.normalize(view2, dim=1)
    logits = z1 @ z2.T
    labels = torch.arange(z1.shape[0], device=z1.device)
    return F.cross_entropy(logits, labels)


def unlearning_loss(forgotten_scores: torch.Tensor) -> torch.Tensor:
    """L_u (Eq. 20): mean of -log σ(-ŷ'_ui) over forgotten pairs: pushes them to score like negatives."""
    if forgotten_scores.numel() == 0:
        return forgotten_scores.sum()
    return -F.logsigmoid(-forgotten_scores).mean()


def preserving_loss(target_scores: torch.Tensor, scores: torch.Tensor, temperature: float) -> torch.Tensor:
    """L_p (Eq. 21-22): squared L2 between the log-softmax distributions over the batch's positives.

    ``target_scores`` come from the original (fixed) model and carry no gradient.
    """
    log_p_target = F.log_softmax(target_scores.detach() / temperature, dim=-1)
    log_p = F.log_softmax(scores / temperature, dim=-1)
    return (log_p - log_p_target).pow(2).sum()
