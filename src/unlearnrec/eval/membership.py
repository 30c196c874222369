"""Forgetting efficacy by membership inference (METHOD.md §6): MI-BF, MI-NG and score statistics."""

from __future__ import annotations

import numpy as np
import torch

from unlearnrec.data.interactions import Interactions
from unlearnrec.data.sampling import sample_negatives


@torch.no_grad()
def edge_scores(user_emb: torch.Tensor, item_emb: torch.Tensor, users, items) -> torch.Tensor:
    """ŷ_ui = ē_u · ē_i for parallel id arrays -> (n,)."""
    u = torch.as_tensor(np.asarray(users), dtype=torch.long, device=user_emb.device)
    i = torch.as_tensor(np.asarray(items), dtype=torch.long, device=item_emb.device)
    return (user_emb[u] * item_emb[i]).sum(-1)


def mean_prob(scores: torch.Tensor) -> float:
    """mean σ(ŷ) (0 for an empty set)."""
    return float(torch.sigmoid(scores.double()).mean()) if scores.numel() else 0.0


def sample_non_edges(known: Interactions, users: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One random non-interacted item per given user (``known`` = every edge ever seen)."""
    rng = np.random.default_rng(seed)
    users = np.asarray(users, dtype=np.int64)
    return users, sample_negatives(known, users, rng)


def mi_bf(before_scores: torch.Tensor, after_scores: torch.Tensor) -> float:
    """MI-BF = mean σ over E_Δ before unlearning / after. > 1: forgotten edges became less likely."""
    return mean_prob(before_scores) / max(mean_prob(after_scores), 1e-12)


def mi_ng(negative_scores: torch.Tensor, forgotten_scores: torch.Tensor) -> float:
    """MI-NG = mean σ over non-edges after / mean σ over E_Δ after. > 1: forgotten edges score
    below random non-interactions."""
    return mean_prob(negative_scores) / max(mean_prob(forgotten_scores), 1e-12)
