"""Seeded, vectorised per-user splits; splits are always checked disjoint."""

from __future__ import annotations

import numpy as np

from unlearnrec.data.interactions import Interactions
from unlearnrec.errors import DataError


def _within_user_rank(inter: Interactions, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random rank of each edge among its user's edges (0..deg-1), and each edge's user degree."""
    r = rng.random(len(inter))
    order = np.lexsort((r, inter.users))
    deg = inter.user_degrees()
    start = np.zeros(inter.num_users + 1, dtype=np.int64)
    np.cumsum(deg, out=start[1:])
    rank = np.empty(len(inter), dtype=np.int64)
    rank[order] = np.arange(len(inter)) - start[inter.users[order]]
    return rank, deg[inter.users]


def split_fractions(inter: Interactions, fractions: tuple[float, ...], seed: int) -> list[Interactions]:
    """Split each user's edges at random into parts of the given fractions (e.g. 0.7, 0.1, 0.2).

    Part sizes per user are floor-rounded cumulatively; the first part keeps at least one edge
    of every user who has one, so nobody is left without training data.
    """
    f = np.asarray(fractions, dtype=np.float64)
    if np.any(f < 0) or not np.isclose(f.sum(), 1.0):
        raise DataError(f"split fractions must be non-negative and sum to 1, got {tuple(fractions)}")
    rng = np.random.default_rng(seed)
    rank, deg = _within_user_rank(inter, rng)
    cum = np.cumsum(f)[:-1]
    # boundaries counted from the end so that the first (train) part takes the rounding slack
    tail = np.floor(np.outer(deg, 1.0 - cum) + 1e-9).astype(np.int64)  # edges after each boundary
    tail = np.minimum(tail, np.maximum(deg - 1, 0)[:, None])
    bounds = deg[:, None] - tail  # rank thresholds
    part = (rank[:, None] >= bounds).sum(1)
    parts = [inter.subset(part == k) for k in range(len(f))]
    check_disjoint(*parts)
    return parts


def holdout(inter: Interactions, ratio: float, seed: int) -> tuple[Interactions, Interactions]:
    """(rest, held): a seeded per-user ``ratio`` of each user's edges held out (validation)."""
    rest, held = split_fractions(inter, (1.0 - ratio, ratio), seed)
    return rest, held


def check_disjoint(*parts: Interactions) -> None:
    """Raise :class:`DataError` if any two parts share an interaction."""
    for a in range(len(parts)):
        for b in range(a + 1, len(parts)):
            shared = parts[a].intersects(parts[b])
            if shared:
                raise DataError(f"splits {a} and {b} share {shared} interactions")
