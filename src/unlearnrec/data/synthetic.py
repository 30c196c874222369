"""Small synthetic interaction data with planted structure (tests, demos, CI)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from unlearnrec.data.interactions import Interactions


def planted_clusters(
    num_users: int = 60,
    num_items: int = 40,
    clusters: int = 4,
    p_in: float = 0.5,
    p_out: float = 0.02,
    seed: int = 0,
) -> Interactions:
    """Users and items fall into ``clusters`` groups; a user interacts with an item of its own
    group with probability ``p_in`` and of another group with ``p_out``. Every user gets at least
    two interactions. A model that learns anything ranks own-group items first."""
    rng = np.random.default_rng(seed)
    cu = np.arange(num_users) % clusters
    ci = np.arange(num_items) % clusters
    p = np.where(cu[:, None] == ci[None, :], p_in, p_out)
    m = rng.random((num_users, num_items)) < p
    for u in np.flatnonzero(m.sum(1) < 2):
        own = np.flatnonzero(ci == cu[u])
        m[u, rng.choice(own, size=min(2, len(own)), replace=False)] = True
    u, i = np.nonzero(m)
    return Interactions(u, i, num_users, num_items)


def write_adjacency_list(inter: Interactions, path: str | Path) -> None:
    """Write LightGCN format (``user item item ...`` per line; users without edges omitted)."""
    csr = inter.to_csr()
    lines = []
    for u in range(inter.num_users):
        its = csr.indices[csr.indptr[u] : csr.indptr[u + 1]]
        if len(its):
            lines.append(" ".join(map(str, [u, *its.tolist()])))
    Path(path).write_text("\n".join(lines) + "\n")
