"""Balanced partitions of the training interactions into K shards, and per-shard sub-models.

Shared by the two SISA-style baselines (docs/method.md §9):

- RecEraser (Chen et al., WWW 2022): balanced k-means on pre-trained embeddings over users (UBP),
  items (IBP) or interactions (InBP), with a balance cap. As in the authors' ``data_partition.py``:
  K random anchors, distances to every anchor, assignment in increasing distance while the target
  shard has room, anchors moved to the mean of their members, T rounds. InBP's distance of an
  edge (u, i) to an anchor (c_u, c_i) is the *product* ``‖e_u - c_u‖² · ‖e_i - c_i‖²`` (as the
  authors' code; the anchor is a pair of user/item centres).
- GraphEraser (Chen et al., CCS 2022): BLPA (balanced label propagation) and BEKM (balanced
  embedding k-means) over the nodes of the user-item graph.

(choice) The authors' greedy assignment walks all (point, shard) pairs sorted by distance in a
Python loop. We vectorise it in rounds: every unassigned point proposes to its nearest shard that
still has room; each shard accepts its closest proposers up to its remaining room; a shard that
had to reject someone is full. At most K + 1 rounds; the result is the same greedy rule except
that a point which loses its first choice competes for its second one a round later.

The balance cap is ``ceil(ceil(n / K) · (1 + slack))`` members per shard (the authors use
``1.2 · n / K``, i.e. slack 0.2), counted in the unit that is clustered (users for UBP, items
for IBP, edges for InBP, users and items separately for BLPA / BEKM).

The sub-models are trained by :mod:`~unlearnrec.unlearn.sharded.pool`; the SISA skeleton both
baselines share is :class:`~unlearnrec.unlearn.sharded.base.ShardedUnlearner`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from unlearnrec.data.interactions import Interactions
from unlearnrec.errors import ConfigError

log = logging.getLogger(__name__)

RECERASER_KINDS = ("interaction", "user", "item", "random")
GRAPHERASER_KINDS = ("blpa", "bekm")
PARTITION_KINDS = RECERASER_KINDS + GRAPHERASER_KINDS


@dataclass(frozen=True)
class Partition:
    """Shard id of every training edge, plus how the partition was balanced.

    edge_shard: (E,) int64 in [0, K), aligned with the canonical order of the interactions.
    unit: what was clustered and capped ("edge", "user", "item" or "node").
    unit_shard: (n_units,) shard of each clustered unit (users for "user"/"node", items for
        "item", edges for "edge"; for "node" the items' shards are in ``item_shard``).
    cap: the balance cap on units per shard (for "node": on users; ``item_cap`` on items).
    """

    edge_shard: np.ndarray
    num_shards: int
    kind: str
    unit: str
    unit_shard: np.ndarray
    cap: int
    item_shard: np.ndarray | None = None
    item_cap: int | None = None
    iterations: int = 0

    def shard_sizes(self) -> np.ndarray:
        """(K,) number of training edges per shard."""
        return np.bincount(self.edge_shard, minlength=self.num_shards)

    def shard_edges(self, train: Interactions, k: int) -> Interactions:
        return train.subset(self.edge_shard == k)


def check_sharded_config(cfg, kinds: tuple[str, ...], method: str, iters_field: str) -> None:
    """The validation RecEraser's and GraphEraser's configs share (a one-line ConfigError)."""
    if cfg.partition not in kinds:
        raise ConfigError(f"unknown {method} partition '{cfg.partition}' (valid: {', '.join(kinds)})")
    if cfg.num_shards < 1 or cfg.shard_epochs < 0 or cfg.agg_epochs < 0 or cfg.workers < 1:
        raise ConfigError("num_shards >= 1, shard_epochs >= 0, agg_epochs >= 0 and workers >= 1 are required")
    iters = getattr(cfg, iters_field)
    sizes_ok = cfg.batch_size >= 1 and cfg.agg_batch_size >= 1
    if cfg.lr <= 0 or cfg.agg_lr <= 0 or not sizes_ok or cfg.slack < 0 or iters < 1:
        raise ConfigError(
            f"lr > 0, agg_lr > 0, batch_size >= 1, agg_batch_size >= 1, slack >= 0 and {iters_field} >= 1 "
            "are required"
        )


def balance_cap(n: int, k: int, slack: float) -> int:
    """Most members a shard may hold: ceil(ceil(n / K) · (1 + slack)); K shards always fit n."""
    return max(1, int(math.ceil(math.ceil(n / k) * (1.0 + slack) - 1e-9)))


def balanced_assign(dist: np.ndarray, cap: int, sizes: np.ndarray | None = None) -> np.ndarray:
    """Greedy capacity-constrained assignment of n points to K shards by increasing distance.

    dist: (n, K) distances (lower is closer). cap: the most members per shard. ``sizes``: (K,)
    members already held (counted against the cap). Returns (n,) int64 shard ids. Vectorised
    in rounds (see the module docstring); deterministic (ties broken by point index).
    """
    n, k = dist.shape
    sizes = np.zeros(k, dtype=np.int64) if sizes is None else sizes.astype(np.int64).copy()
    if n > k * cap - int(sizes.sum()):
        raise ConfigError(f"cannot place {n} points in {k} shards of at most {cap}")
    out = np.full(n, -1, dtype=np.int64)
    full = sizes >= cap
    todo = np.arange(n)
    while len(todo):
        d = np.where(full[None, :], np.inf, dist[todo])
        choice = np.argmin(d, axis=1)
        best = d[np.arange(len(todo)), choice]
        order = np.lexsort((todo, best, choice))  # by shard, then distance, then index
        ch = choice[order]
        first = np.searchsorted(ch, ch, side="left")  # start of each shard's run of proposals
        rank = np.arange(len(ch)) - first
        ok = rank < (cap - sizes)[ch]
        out[todo[order[ok]]] = ch[ok]
        sizes += np.bincount(ch[ok], minlength=k)
        full |= sizes >= cap
        full |= np.bincount(ch[~ok], minlength=k) > 0  # had to refuse someone: no room left
        todo = np.sort(todo[order[~ok]])
    return out


def _sq_dist(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """(n, K) squared Euclidean distances between rows of x (n, d) and centres c (K, d)."""
    d = (x * x).sum(1)[:, None] + (c * c).sum(1)[None, :] - 2.0 * (x @ c.T)
    return np.maximum(d, 0.0)


def _centres(x: np.ndarray, labels: np.ndarray, k: int, old: np.ndarray) -> np.ndarray:
    """Mean of each shard's members (an empty shard keeps its old centre)."""
    sums = np.zeros((k, x.shape[1]))
    np.add.at(sums, labels, x)
    cnt = np.bincount(labels, minlength=k)
    return np.where(cnt[:, None] > 0, sums / np.maximum(cnt, 1)[:, None], old)


def _kmeans(x: np.ndarray, k: int, cap: int, iters: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Balanced k-means of the rows of x (n, d): (labels (n,), rounds run)."""
    c = x[rng.choice(len(x), size=k, replace=False)].astype(np.float64)
    labels = None
    rounds = 0
    for rounds in range(1, iters + 1):  # noqa: B007 (the count is returned)
        new = balanced_assign(_sq_dist(x, c), cap)
        if labels is not None and np.array_equal(new, labels):
            break
        labels = new
        c = _centres(x, labels, k, c)
    return labels, rounds


def partition_interactions(
    train: Interactions,
    kind: str,
    num_shards: int,
    user_emb: np.ndarray | torch.Tensor | None = None,
    item_emb: np.ndarray | torch.Tensor | None = None,
    slack: float = 0.2,
    iters: int = 10,
    seed: int = 0,
) -> Partition:
    """Split the training edges into ``num_shards`` balanced shards.

    kind: "interaction" (InBP), "user" (UBP), "item" (IBP), "random" (RecEraser's random
    split), "blpa" or "bekm" (GraphEraser; an edge goes to the shard of its *user*, see
    :func:`_node_partition`). user_emb (U, d) / item_emb (I, d): pre-trained embeddings of the
    model being unlearned (needed by every kind but "random" and "blpa").
    Deterministic for a seed.
    """
    if kind not in PARTITION_KINDS:
        raise ConfigError(f"unknown partition kind '{kind}' (valid: {', '.join(PARTITION_KINDS)})")
    if num_shards < 1:
        raise ConfigError(f"num_shards must be >= 1, got {num_shards}")
    if slack < 0:
        raise ConfigError(f"balance slack must be >= 0, got {slack}")
    if iters < 1:
        raise ConfigError(f"partition iterations must be >= 1, got {iters}")
    ue = None if user_emb is None else _np(user_emb)
    ie = None if item_emb is None else _np(item_emb)
    if kind not in ("random", "blpa") and (ue is None or ie is None):
        raise ConfigError(f"partition kind '{kind}' needs pre-trained user and item embeddings")
    rng = np.random.default_rng(seed)
    k = num_shards
    n = len(train)
    if kind == "random":
        cap = balance_cap(n, k, 0.0)
        lab = np.empty(n, dtype=np.int64)
        lab[rng.permutation(n)] = np.arange(n) % k
        return Partition(lab, k, kind, "edge", lab, cap)
    if kind == "interaction":
        if n < k:
            raise ConfigError(f"cannot split {n} interactions into {k} shards")
        cap = balance_cap(n, k, slack)
        anchors = rng.choice(n, size=k, replace=False)
        cu, ci = ue[train.users[anchors]], ie[train.items[anchors]]
        lab, it = None, 0
        for it in range(1, iters + 1):  # noqa: B007 (the count is reported)
            # InBP distance: ‖e_u - c_u‖² · ‖e_i - c_i‖², via (U, K) and (I, K) tables, gathered per edge
            dist = _sq_dist(ue, cu)[train.users] * _sq_dist(ie, ci)[train.items]
            new = balanced_assign(dist, cap)
            if lab is not None and np.array_equal(new, lab):
                break
            lab = new
            cu = _centres(ue[train.users], lab, k, cu)
            ci = _centres(ie[train.items], lab, k, ci)
        return Partition(lab, k, kind, "edge", lab, cap, iterations=it)
    if kind in ("user", "item"):
        ids = train.users if kind == "user" else train.items
        emb = ue if kind == "user" else ie
        active = np.unique(ids)  # nodes with at least one training edge
        if len(active) < k:
            raise ConfigError(f"cannot split {len(active)} {kind}s into {k} shards")
        cap = balance_cap(len(active), k, slack)
        lab, it = _kmeans(emb[active], k, cap, iters, rng)
        node_shard = np.full(len(emb), -1, dtype=np.int64)
        node_shard[active] = lab
        return Partition(node_shard[ids], k, kind, kind, node_shard, cap, iterations=it)
    return _node_partition(train, kind, k, ue, ie, slack, iters, rng)


def _node_partition(train, kind, k, ue, ie, slack, iters, rng) -> Partition:
    """GraphEraser's node partitions; users and items are capped separately.

    (choice) GraphEraser keeps only the edges inside a shard's node set, which on a bipartite
    interaction graph would throw away most edges. We partition nodes (users and items), then
    send every edge to the shard of its user: each shard trains on all edges of its users, and
    the items' labels only shape the communities.
    """
    nu, ni = train.num_users, train.num_items
    cap_u, cap_i = balance_cap(nu, k, slack), balance_cap(ni, k, slack)
    it = 0
    if kind == "bekm":
        x_u, x_i = ue.astype(np.float64), ie.astype(np.float64)
        pick = rng.choice(nu + ni, size=k, replace=False)
        c = np.concatenate([x_u, x_i])[pick]
        lu = li = None
        for it in range(1, iters + 1):  # noqa: B007 (the count is reported)
            nlu = balanced_assign(_sq_dist(x_u, c), cap_u)
            nli = balanced_assign(_sq_dist(x_i, c), cap_i)
            if lu is not None and np.array_equal(nlu, lu) and np.array_equal(nli, li):
                break
            lu, li = nlu, nli
            c = _centres(np.concatenate([x_u, x_i]), np.concatenate([lu, li]), k, c)
    else:  # BLPA
        lu = np.empty(nu, dtype=np.int64)
        lu[rng.permutation(nu)] = np.arange(nu) % k
        li = np.empty(ni, dtype=np.int64)
        li[rng.permutation(ni)] = np.arange(ni) % k
        a = train.to_csr(np.float64)
        at = a.T.tocsr()
        for it in range(1, iters + 1):  # noqa: B007 (the count is reported)
            # users follow their items' labels, then items follow their users' (alternating
            # half-steps: synchronous LPA oscillates on a bipartite graph)
            mu = _lpa_step(a, li, lu, k, cap_u)
            mi = _lpa_step(at, lu, li, k, cap_i)
            if mu == 0 and mi == 0:
                break
    return Partition(
        lu[train.users], k, kind, "node", lu, cap_u, item_shard=li, item_cap=cap_i, iterations=it
    )


def _lpa_step(adj: sp.csr_matrix, nbr_labels: np.ndarray, labels: np.ndarray, k: int, cap: int) -> int:
    """One balanced label-propagation half-step (GraphEraser's BLPA), in place on ``labels``.

    Every node wants the label most frequent among its neighbours; moves are applied in
    decreasing order of gain (neighbours with the new label minus with the current one) while
    the destination has room (rooms freed by departures count from the next step); moves that
    found no room are paired into swaps between two shards. Returns the number of nodes moved.
    """
    onehot = sp.csr_matrix(
        (np.ones(len(nbr_labels)), (np.arange(len(nbr_labels)), nbr_labels)), shape=(len(nbr_labels), k)
    )
    counts = np.asarray((adj @ onehot).todense())  # (n, K) neighbours per label
    n = len(labels)
    cur = counts[np.arange(n), labels]
    want = np.argmax(counts, axis=1)
    gain = counts[np.arange(n), want] - cur
    movers = np.flatnonzero(gain > 0)
    if len(movers) == 0:
        return 0
    sizes = np.bincount(labels, minlength=k)
    order = np.lexsort((movers, -gain[movers], want[movers]))  # by destination, then gain desc
    mv, dest = movers[order], want[movers][order]
    rank = np.arange(len(dest)) - np.searchsorted(dest, dest, side="left")
    ok = rank < np.maximum(cap - sizes, 0)[dest]
    # moves refused for lack of room are paired into swaps between two shards (a -> b against
    # b -> a, best gains first): sizes do not change, so a full shard can still improve
    rest, src, dst = mv[~ok], labels[mv[~ok]], dest[~ok]
    key = src * k + dst
    o = np.lexsort((rest, -gain[rest], key))
    rest, key = rest[o], key[o]
    rank = np.arange(len(key)) - np.searchsorted(key, key, side="left")
    n_pair = np.bincount(key, minlength=k * k).reshape(k, k)
    allowed = np.minimum(n_pair, n_pair.T).ravel()
    swap = rank < allowed[key]
    labels[mv[ok]] = dest[ok]
    labels[rest[swap]] = key[swap] % k
    return int(ok.sum() + swap.sum())


def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)
