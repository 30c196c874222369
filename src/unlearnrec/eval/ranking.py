"""Full-ranking Recall@K and NDCG@K, vectorised over batches of users."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from unlearnrec.data.interactions import Interactions


def _rows_dense(m: sp.csr_matrix, rows: np.ndarray, device) -> torch.Tensor:
    """Dense bool (len(rows), n_cols) of a CSR row slice."""
    sub = m[rows]
    out = torch.zeros(len(rows), m.shape[1], dtype=torch.bool, device=device)
    r = np.repeat(np.arange(len(rows)), np.diff(sub.indptr))
    idx = torch.from_numpy(r).to(device), torch.from_numpy(sub.indices.astype(np.int64)).to(device)
    out[idx] = True
    return out


def topk_metrics(hits: torch.Tensor, num_relevant: torch.Tensor, ks: list[int]) -> dict[str, torch.Tensor]:
    """Per-user Recall@K and NDCG@K from a hit matrix.

    hits: (B, Kmax) bool/float, hits[b, r] = 1 if the item ranked r (0-based) for user b is relevant.
    num_relevant: (B,) number of relevant items of each user (> 0).
    Returns {"recall@K": (B,), "ndcg@K": (B,)} for each K in ``ks``.
    Recall@K = hits in top K / |relevant|; NDCG@K = DCG@K / IDCG over min(|relevant|, K) positions.
    """
    hits = hits.float()
    kmax = hits.shape[1]
    disc = 1.0 / torch.log2(torch.arange(2, kmax + 2, device=hits.device, dtype=torch.float32))
    cum_disc = torch.cumsum(disc, 0)
    out = {}
    nrel = num_relevant.float()
    for k in ks:
        h = hits[:, :k]
        out[f"recall@{k}"] = h.sum(1) / nrel
        dcg = (h * disc[:k]).sum(1)
        ideal = cum_disc[(torch.clamp(num_relevant, max=k) - 1).long()]
        out[f"ndcg@{k}"] = dcg / ideal
    return out


class _UserBlocks:
    """The edges of an :class:`Interactions` (sorted by user, then item) for a sorted batch of users.

    A batch of sorted users covers a contiguous range of the sorted edge arrays, found by binary
    search; only the edges of users in the batch are kept. No scipy slicing and no dense (B, I)
    boolean matrix: masking and hit lookup work on the (row, item) pairs directly.
    """

    def __init__(self, inter: Interactions):
        self.users = inter.users
        self.items = inter.items

    def rows(self, local: np.ndarray, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """(batch row, item) of the edges of users in [lo, hi) that ``local`` maps to a row (>= 0)."""
        a, b = np.searchsorted(self.users, (lo, hi))
        r = local[self.users[a:b]]
        keep = r >= 0
        return r[keep], self.items[a:b][keep]


@torch.no_grad()
def evaluate_embeddings(
    user_emb: torch.Tensor,
    item_emb: torch.Tensor,
    target: Interactions,
    exclude: list[Interactions] | tuple[Interactions, ...] = (),
    ks: list[int] | tuple[int, ...] = (20,),
    batch_size: int = 2048,
    users: np.ndarray | None = None,
    banned_items: np.ndarray | None = None,
) -> dict[str, float]:
    """Full-ranking Recall@K / NDCG@K averaged over users with at least one target item.

    Scores are ``user_emb @ item_emb.T`` over all items; items in any ``exclude`` set (the
    training interactions) are masked for their user, and ``banned_items`` (forgotten items)
    for everyone. ``users`` restricts the evaluated users (default: all with targets).
    Returns {"recall@K": float, "ndcg@K": float, ..., "users": int}.
    """
    ks = sorted(set(int(k) for k in ks))
    num_items = target.num_items
    kmax = min(max(ks), num_items)
    n_rel = np.bincount(target.users, minlength=target.num_users)
    cand = np.flatnonzero(n_rel > 0)
    if users is not None:
        cand = np.intersect1d(cand, np.asarray(users, dtype=np.int64))
    tgt = _UserBlocks(target)
    masks = [_UserBlocks(e) for e in exclude if len(e)]
    banned = None
    if banned_items is not None and len(banned_items):
        banned = torch.as_tensor(np.asarray(banned_items, dtype=np.int64), device=user_emb.device)
    local = np.full(target.num_users, -1, dtype=np.int64)
    sums = {f"{m}@{k}": 0.0 for k in ks for m in ("recall", "ndcg")}
    device = user_emb.device
    buf = None
    for start in range(0, len(cand), batch_size):
        rows = cand[start : start + batch_size]
        lo, hi = int(rows[0]), int(rows[-1]) + 1
        local[rows] = np.arange(len(rows))
        if buf is None:  # one score buffer for all batches: a fresh (B, I) tensor each time costs page faults
            buf = torch.empty(min(batch_size, len(cand)), num_items, dtype=user_emb.dtype, device=device)
        scores = buf[: len(rows)]
        torch.mm(user_emb[torch.from_numpy(rows).to(device)], item_emb.T, out=scores)
        for m in masks:
            r, c = m.rows(local, lo, hi)
            scores[torch.from_numpy(r).to(device), torch.from_numpy(c).to(device)] = float("-inf")
        if banned is not None:
            scores[:, banned] = float("-inf")
        top = torch.topk(scores, kmax, dim=1, sorted=True).indices
        # hits by key lookup: key = row * num_items + item, increasing over the target's edges
        r, c = tgt.rows(local, lo, hi)
        tkeys = torch.from_numpy(r * num_items + c).to(device)
        qkeys = torch.arange(len(rows), device=device).unsqueeze(1) * num_items + top
        pos = torch.searchsorted(tkeys, qkeys).clamp_(max=max(len(tkeys) - 1, 0))
        hits = tkeys[pos] == qkeys
        per = topk_metrics(hits, torch.from_numpy(n_rel[rows]).to(device), ks)
        for key, v in per.items():
            sums[key] += float(v.sum())
        local[rows] = -1
    n = max(len(cand), 1)
    res = {k: v / n for k, v in sums.items()}
    res["users"] = int(len(cand))
    return res


@torch.no_grad()
def recommend(
    user_emb: torch.Tensor,
    item_emb: torch.Tensor,
    users,
    k: int,
    exclude: Interactions | None = None,
    banned_items: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (items (B, k), scores (B, k)) for the given users, seen items and banned items masked."""
    users = np.asarray(users, dtype=np.int64).ravel()
    scores = user_emb[torch.from_numpy(users).to(user_emb.device)] @ item_emb.T
    if exclude is not None:
        scores.masked_fill_(_rows_dense(exclude.to_csr(), users, scores.device), float("-inf"))
    if banned_items is not None and len(banned_items):
        scores[:, torch.as_tensor(banned_items, device=scores.device)] = float("-inf")
    k = min(k, item_emb.shape[0])
    top = torch.topk(scores, k, dim=1)
    return top.indices.cpu().numpy(), top.values.cpu().numpy()
