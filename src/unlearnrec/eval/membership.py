"""Forgetting efficacy by membership inference (docs/method.md §6): MI-BF, MI-NG and score statistics."""

from __future__ import annotations

import numpy as np
import torch

from unlearnrec.data.interactions import Interactions
from unlearnrec.data.sampling import sample_negatives


@torch.no_grad()
def edge_scores(user_emb: torch.Tensor, item_emb: torch.Tensor, users, items) -> torch.Tensor:
    """ŷ_ui = ē_u · ē_i for parallel id arrays -> (n,)."""
    # copies: Interactions arrays are read-only, which torch warns about
    u = torch.as_tensor(np.array(users, dtype=np.int64), device=user_emb.device)
    i = torch.as_tensor(np.array(items, dtype=np.int64), device=item_emb.device)
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


# ------------------------------------------------------------------------ beyond the paper
def score_stats(scores: torch.Tensor) -> dict[str, float]:
    """Mean and (population) variance of raw scores ŷ (n,), and mean σ(ŷ); NaN for an empty set.

    Used for the forgotten, retained-positive and negative edge sets (the paper's Fig. 2-3).
    """
    n = int(scores.numel())
    if n == 0:
        return {"n": 0, "mean": float("nan"), "var": float("nan"), "mean_prob": float("nan")}
    s = scores.detach().double()
    return {"n": n, "mean": float(s.mean()), "var": float(s.var(unbiased=False)), "mean_prob": mean_prob(s)}


def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy().ravel()
    return np.asarray(x, dtype=np.float64).ravel()


def membership_auc(member_scores, non_member_scores) -> float:
    """ROC AUC of telling members from non-members by their score: P(s_m > s_n) + ½ P(s_m = s_n).

    ``member_scores`` (m,): the forgotten edges; ``non_member_scores`` (n,): never-seen
    non-edges. 0.5 means the score carries no membership signal (what retraining gives for
    randomly chosen forgotten edges); 1.0 means every forgotten edge still scores above every
    non-edge; < 0.5 means forgotten edges score *below* non-edges. Adversarial edges are chosen
    implausible, so there the retrained model's AUC, well below 0.5, is the target. Computed from
    mid-ranks (Mann-Whitney U) in O((m + n) log(m + n)); NaN if either set is empty.
    """
    a, b = _np(member_scores), _np(non_member_scores)
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([a, b]))  # mid-ranks: ties count ½
    u = ranks[: len(a)].sum() - len(a) * (len(a) + 1) / 2.0
    return float(u / (len(a) * len(b)))


def _ecdfs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pooled sorted support and the two empirical CDFs evaluated on it (right-continuous)."""
    a, b = np.sort(a), np.sort(b)
    grid = np.sort(np.concatenate([a, b]))
    fa = np.searchsorted(a, grid, side="right") / len(a)
    fb = np.searchsorted(b, grid, side="right") / len(b)
    return grid, fa, fb


def wasserstein_1d(a, b) -> float:
    """1-Wasserstein distance between two empirical distributions (1-D samples of any sizes).

    W₁ = ∫ |F_a(x) - F_b(x)| dx, exact for step CDFs: the sum over the pooled sorted support of
    |F_a - F_b| times the gap to the next point. Same units as the samples; NaN if one is empty.
    """
    a, b = _np(a), _np(b)
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    grid, fa, fb = _ecdfs(a, b)
    return float(np.sum(np.abs(fa - fb)[:-1] * np.diff(grid)))


def ks_statistic(a, b) -> float:
    """Two-sample Kolmogorov-Smirnov statistic sup_x |F_a(x) - F_b(x)| in [0, 1]; NaN if one is empty."""
    a, b = _np(a), _np(b)
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    _, fa, fb = _ecdfs(a, b)
    return float(np.max(np.abs(fa - fb)))


@torch.no_grad()
def forgetting_metrics(
    before: tuple[torch.Tensor, torch.Tensor],
    after: tuple[torch.Tensor, torch.Tensor],
    forgotten: Interactions,
    known: Interactions,
    retained: Interactions | None = None,
    reference: tuple[torch.Tensor, torch.Tensor] | None = None,
    seed: int = 0,
    max_retained: int = 100_000,
) -> dict[str, float]:
    """Every forgetting metric of one unlearning step (docs/method.md §6, plus AUC and distances).

    ``before`` / ``after``: (user (U, d), item (I, d)) final embeddings of the model before and
    after unlearning; ``forgotten``: E_Δ; ``known``: every edge ever seen (train ∪ val ∪ test ∪
    E_Δ) so that sampled non-edges are true non-interactions; ``retained``: the residual
    training edges (a seeded sample of at most ``max_retained`` is scored); ``reference``: the
    retrained model's embeddings, whose forgotten-edge σ-scores are the target distribution.

    Non-edges: one per forgotten edge, for the same user (seeded). Returns ``mi_bf``, ``mi_ng``,
    ``auc`` (forgotten vs non-edges after unlearning; 0.5 = indistinguishable), ``auc_before``,
    score statistics ``{forgotten,negative,retained}_{mean,var}`` after unlearning, and with a
    reference ``w1_to_ref`` / ``ks_to_ref`` between σ-scores of the forgotten edges.
    """
    fu, fi = forgotten.users, forgotten.items
    nu, ni = sample_non_edges(known, fu, seed)
    f_before = edge_scores(*before, fu, fi)
    f_after = edge_scores(*after, fu, fi)
    n_before = edge_scores(*before, nu, ni)
    n_after = edge_scores(*after, nu, ni)
    out: dict[str, float] = {
        "mi_bf": mi_bf(f_before, f_after),
        "mi_ng": mi_ng(n_after, f_after),
        "mi_ng_before": mi_ng(n_before, f_before),
        "auc": membership_auc(f_after, n_after),
        "auc_before": membership_auc(f_before, n_before),
        "forgotten_prob_before": mean_prob(f_before),
        "forgotten_prob": mean_prob(f_after),
        "negative_prob": mean_prob(n_after),
    }
    sets = {"forgotten": f_after, "negative": n_after}
    if retained is not None and len(retained):
        rng = np.random.default_rng(seed + 1)
        idx = np.arange(len(retained))
        if len(idx) > max_retained:
            idx = np.sort(rng.choice(len(retained), size=max_retained, replace=False))
        sets["retained"] = edge_scores(*after, retained.users[idx], retained.items[idx])
    for name, s in sets.items():
        st = score_stats(s)
        out[f"{name}_mean"], out[f"{name}_var"] = st["mean"], st["var"]
    if reference is not None:
        p_ref = torch.sigmoid(edge_scores(*reference, fu, fi).double())
        p_after = torch.sigmoid(f_after.double())
        out["w1_to_ref"] = wasserstein_1d(p_after, p_ref)
        out["ks_to_ref"] = ks_statistic(p_after, p_ref)
    return out
