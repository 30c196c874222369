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

Also here: :func:`train_shards` (one backbone per shard, trained with the normal loop, in
parallel processes when asked) and :class:`FixedEmbedding`, the backbone that serves an
ensemble's final embeddings through the ordinary ``TrainedModel`` API.
"""

from __future__ import annotations

import copy
import logging
import math
import multiprocessing as mp
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from unlearnrec.backbones.fixed import FixedEmbedding, FixedEmbeddingConfig  # noqa: F401 (re-export)
from unlearnrec.config import to_dict
from unlearnrec.data.graph import Graph
from unlearnrec.data.interactions import Interactions
from unlearnrec.data.sampling import sample_negatives
from unlearnrec.errors import ConfigError, TrainingError, UnlearnRecError
from unlearnrec.io.checkpoint import load_checkpoint, save_checkpoint
from unlearnrec.model import TrainedModel
from unlearnrec.unlearn.base import Request, Unlearner

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


# ------------------------------------------------------------------------------- sub-models
def shard_seed(seed: int, shard: int) -> int:
    """The training seed of shard ``shard``: fixed per shard, so a retrained shard is reproducible."""
    return int(np.random.SeedSequence([seed, shard]).generate_state(1)[0])


@dataclass(frozen=True)
class ShardJob:
    """Everything a worker needs to train one shard (plain data: cheap to send to a process)."""

    shard: int
    users: np.ndarray
    items: np.ndarray
    num_users: int
    num_items: int
    backbone: str
    backbone_config: dict
    epochs: int
    lr: float
    batch_size: int
    seed: int
    threads: int = 0
    device: str = "cpu"


def train_one_shard(job: ShardJob) -> np.ndarray:
    """Train a fresh backbone on one shard's edges; returns its final embeddings Ē (N, d) float32.

    The graph keeps the full id space; nodes without an edge in the shard keep their initial
    layer-0 rows (they are never in a batch).
    """
    from unlearnrec.backbones import build_backbone
    from unlearnrec.train.loop import TrainConfig, fit

    if job.threads:
        torch.set_num_threads(job.threads)
    inter = Interactions(job.users, job.items, job.num_users, job.num_items)
    graph = Graph.from_interactions(inter, device=job.device)
    gen = torch.Generator().manual_seed(job.seed)
    model = build_backbone(
        job.backbone, job.num_users, job.num_items, dict(job.backbone_config), generator=gen
    )
    model = model.to(job.device)
    cfg = TrainConfig(epochs=job.epochs, batch_size=job.batch_size, lr=job.lr, patience=0, seed=job.seed)
    if len(inter):
        fit(model, graph, cfg, parallel=False)  # a shard is one rank's own work (train_shards)
    model.eval()
    with torch.no_grad():
        u, i = model.embed(graph)
    return torch.cat([u, i]).float().cpu().numpy()


def train_shards(jobs: list[ShardJob], workers: int = 1) -> list[np.ndarray]:
    """Train the given shards; ``workers`` > 1 uses that many spawned processes, torch threads split.

    Returns one (N, d) array of final embeddings per job, in order. Results do not depend on
    ``workers`` beyond floating-point summation order.

    In a ``torch.distributed`` group of several processes (``torchrun``) the shards are dealt
    out to the ranks instead (shard i to rank i mod world, each trained alone on its rank, with
    ``workers`` processes there) and every rank receives all of them: the same arrays as one
    process would compute, since a shard's training depends only on its job.
    """
    import torch.distributed as dist

    from unlearnrec.train import distributed

    part = distributed.current()
    if part.world > 1 and len(jobs) > 1:
        mine = _train_here(jobs[part.rank :: part.world], workers)
        gathered: list = [None] * part.world
        dist.all_gather_object(gathered, mine)
        out: list[np.ndarray] = [None] * len(jobs)  # type: ignore[list-item]
        for rank, arrays in enumerate(gathered):
            out[rank :: part.world] = arrays
        return out
    return _train_here(jobs, workers)


def _train_here(jobs: list[ShardJob], workers: int) -> list[np.ndarray]:
    if workers <= 1 or len(jobs) <= 1:
        return [train_one_shard(j) for j in jobs]
    workers = min(workers, len(jobs))
    threads = max(1, torch.get_num_threads() // workers)
    jobs = [ShardJob(**{**j.__dict__, "threads": threads}) for j in jobs]
    ctx = mp.get_context("spawn")  # fork after torch's thread pools start can deadlock
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as ex:
        return list(ex.map(train_one_shard, jobs))


# ------------------------------------------------------------------------------- serving
# ------------------------------------------------------------------------------- the SISA skeleton
class ShardedUnlearner(Unlearner):
    """prepare = partition + one sub-model per shard + aggregator; forget = retrain the touched shards.

    Subclasses set ``name`` and implement :meth:`_make_partition` (the shard of every edge) and
    :meth:`_aggregate` (shard final embeddings -> served model). The config must have
    ``num_shards``, ``shard_epochs``, ``lr``, ``batch_size`` and ``workers``.

    ``forget`` works against the prepared state: every edge of the prepared training set missing
    from ``train`` (earlier requests) is forgotten too, so cumulative requests stay exact. The
    prepared state is never changed by ``forget``.
    """

    name = "sharded"

    def __init__(self, config, seed: int = 0):
        self.config = config
        self.seed = int(seed)
        self._train: Interactions | None = None
        self._partition: Partition | None = None
        self._shard_emb: list[np.ndarray] = []
        self._backbone: tuple[str, dict] | None = None
        self.prepared_model: TrainedModel | None = None
        self.prepare_info: dict = {}

    # -- hooks ----------------------------------------------------------------------------------
    def _make_partition(self, model: TrainedModel, train: Interactions) -> Partition:
        raise NotImplementedError

    def _aggregate(
        self, shard_emb: np.ndarray, graph: Graph, shard_degree: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """(user (U, d'), item (I, d') served embeddings, info) from shard_emb (K, N, d)."""
        raise NotImplementedError

    # -- the contract ---------------------------------------------------------------------------
    def prepare(self, model: TrainedModel, train: Interactions) -> None:
        t0 = time.perf_counter()
        part = self._make_partition(model, train)
        t1 = time.perf_counter()
        self._train = train
        self._partition = part
        self._backbone = (model.backbone_name, to_dict(model.backbone.config))
        keep = np.ones(len(train), dtype=bool)
        shards = list(range(part.num_shards))
        self._shard_emb = self._train_shards(shards, keep, model.graph.device)
        t2 = time.perf_counter()
        graph = Graph.from_interactions(train, device=model.graph.device)
        self.prepared_model, agg_info = self._serve(model, graph, self._shard_emb, keep)
        self.prepare_info = {
            "partition": part.kind,
            "num_shards": part.num_shards,
            "partition_iterations": part.iterations,
            "shard_sizes": part.shard_sizes().tolist(),
            "balance_cap": part.cap,
            "partition_seconds": t1 - t0,
            "shard_seconds": t2 - t1,
            "aggregate_seconds": time.perf_counter() - t2,
            **agg_info,
        }
        log.info("%s prepared: %s", self.name, self.prepare_info)

    def _forget(
        self, model: TrainedModel, train: Interactions, request: Request
    ) -> tuple[TrainedModel, dict]:
        if self._train is None:
            log.warning(
                "%s.forget without prepare: preparing now (counted in the forgetting time)", self.name
            )
            self.prepare(model, train)
        prepared = self._train
        if not prepared.same_space(train) or prepared.intersects(train) != len(train):
            raise UnlearnRecError(
                f"{self.name}: the training set holds edges the partition never saw; "
                "call prepare() on it first"
            )
        earlier = (
            prepared.drop(train)
            if len(train) != len(prepared)
            else Interactions.empty(train.num_users, train.num_items)
        )
        removed = request.edges.union(earlier) if len(earlier) else request.edges
        if len(removed) == 0:
            # nothing to forget: the input model is returned unchanged (as a new object)
            return _copy_model(model), {"retrained_shards": [], "affected_edges": 0}
        pos = prepared.locate(removed)
        keep = np.ones(len(prepared), dtype=bool)
        keep[pos] = False
        affected = np.unique(self._partition.edge_shard[pos]).tolist()
        t0 = time.perf_counter()
        emb = list(self._shard_emb)
        for k, e in zip(affected, self._train_shards(affected, keep, model.graph.device), strict=True):
            emb[k] = e
        t1 = time.perf_counter()
        graph = Graph.from_interactions(prepared.subset(keep), device=model.graph.device)
        new, agg_info = self._serve(model, graph, emb, keep)
        info = {
            "retrained_shards": affected,
            "num_retrained": len(affected),
            "num_shards": self._partition.num_shards,
            "affected_edges": int(len(removed)),
            "shard_seconds": t1 - t0,
            "aggregate_seconds": time.perf_counter() - t1,
            **agg_info,
        }
        return new, info

    # -- helpers --------------------------------------------------------------------------------
    def shard_training_edges(self, shard: int, forgotten: Interactions | None = None) -> Interactions:
        """The edges shard ``shard`` trains on (after removing ``forgotten``, if given)."""
        inter = self._partition.shard_edges(self._train, shard)
        return inter if forgotten is None else inter.drop(forgotten, strict=False)

    def _train_shards(self, shards: list[int], keep: np.ndarray, device) -> list[np.ndarray]:
        cfg = self.config
        name, bcfg = self._backbone
        train = self._train
        jobs = []
        for k in shards:
            m = (self._partition.edge_shard == k) & keep
            jobs.append(
                ShardJob(
                    k,
                    train.users[m],
                    train.items[m],
                    train.num_users,
                    train.num_items,
                    name,
                    bcfg,
                    cfg.shard_epochs,
                    cfg.lr,
                    cfg.batch_size,
                    shard_seed(self.seed, k),
                    device=str(device),
                )
            )
        workers = cfg.workers if torch.device(device).type == "cpu" else 1
        return train_shards(jobs, workers)

    def _serve(self, model: TrainedModel, graph: Graph, emb: list[np.ndarray], keep: np.ndarray):
        part = self._partition
        train = self._train
        deg = np.zeros((part.num_shards, train.num_users + train.num_items), dtype=np.int64)
        es = part.edge_shard[keep]
        np.add.at(deg, (es, train.users[keep]), 1)
        np.add.at(deg, (es, train.items[keep] + train.num_users), 1)
        ue, ie, info = self._aggregate(np.stack(emb), graph, deg)
        backbone = FixedEmbedding.from_embeddings(ue.detach().cpu(), ie.detach().cpu()).to(graph.device)
        return self._wrap(model, graph, backbone), info

    def _wrap(self, model: TrainedModel, graph: Graph, backbone: FixedEmbedding) -> TrainedModel:
        return TrainedModel(
            backbone,
            graph,
            "fixed",
            model.dataset,
            dict(model.split),
            forgotten_users=np.asarray(model.forgotten_users).copy(),
            forgotten_items=np.asarray(model.forgotten_items).copy(),
            meta={"ensemble": self.name, "ensemble_of": model.backbone_name},
        )

    # -- the runner's cache -----------------------------------------------------------------------
    def save_prepared(self, directory: str | os.PathLike) -> bool:
        if self._train is None:
            return False
        p = self._partition
        tensors = {
            "edge_shard": torch.from_numpy(p.edge_shard.copy()),
            "unit_shard": torch.from_numpy(p.unit_shard.copy()),
            "shard_emb": torch.from_numpy(np.stack(self._shard_emb)),
            "served_e0": self.prepared_model.backbone.e0.detach().cpu(),
        }
        if p.item_shard is not None:
            tensors["item_shard"] = torch.from_numpy(p.item_shard.copy())
        meta = {
            "kind": f"{self.name}-prepared",
            "config": to_dict(self.config),
            "seed": self.seed,
            "train_fingerprint": self._train.fingerprint(),
            "backbone": self._backbone[0],
            "backbone_config": self._backbone[1],
            "partition": {
                "num_shards": p.num_shards,
                "kind": p.kind,
                "unit": p.unit,
                "cap": p.cap,
                "item_cap": p.item_cap,
                "iterations": p.iterations,
            },
            "prepare_info": self.prepare_info,
        }
        save_checkpoint(directory, tensors, meta)
        return True

    def load_prepared(self, directory: str | os.PathLike, model: TrainedModel) -> bool:
        try:
            tensors, meta = load_checkpoint(directory)
        except (OSError, UnlearnRecError):
            return False
        if (
            meta.get("kind") != f"{self.name}-prepared"
            or meta.get("config") != to_dict(self.config)
            or meta.get("seed") != self.seed
            or meta.get("train_fingerprint") != model.train.fingerprint()
            or meta.get("backbone") != model.backbone_name
        ):
            return False
        pm = meta["partition"]
        self._train = model.train
        self._partition = Partition(
            tensors["edge_shard"].numpy(),
            pm["num_shards"],
            pm["kind"],
            pm["unit"],
            tensors["unit_shard"].numpy(),
            pm["cap"],
            tensors["item_shard"].numpy() if "item_shard" in tensors else None,
            pm["item_cap"],
            pm["iterations"],
        )
        self._backbone = (meta["backbone"], meta["backbone_config"])
        self._shard_emb = list(tensors["shard_emb"].numpy())
        nu = model.train.num_users
        served = FixedEmbedding.from_embeddings(tensors["served_e0"][:nu], tensors["served_e0"][nu:]).to(
            model.graph.device
        )
        self.prepared_model = self._wrap(model, model.graph, served)
        self.prepare_info = meta.get("prepare_info", {})
        return True


def _copy_model(model: TrainedModel) -> TrainedModel:
    """A new TrainedModel with a copy of the backbone (the immutable graph is shared)."""
    return TrainedModel(
        copy.deepcopy(model.backbone),
        model.graph,
        model.backbone_name,
        model.dataset,
        dict(model.split),
        np.asarray(model.forgotten_users).copy(),
        np.asarray(model.forgotten_items).copy(),
        meta={},
    )


def bpr_epochs(
    loss_fn,
    params,
    train: Interactions,
    sample: np.ndarray | None,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    device,
) -> list[float]:
    """A small Adam/BPR loop over ``train`` (or the edge positions in ``sample``) for an aggregator.

    Negatives are rejected against all of ``train``. ``loss_fn(users, pos, neg)`` -> scalar.
    Returns the mean loss per epoch.
    """
    rng = np.random.default_rng(seed)
    opt = torch.optim.Adam(params, lr=lr)
    idx_all = np.arange(len(train)) if sample is None else sample
    hist = []
    for _ in range(epochs):
        idx = idx_all[rng.permutation(len(idx_all))]
        users, pos = train.users[idx], train.items[idx]
        neg = sample_negatives(train, users, rng)
        tot, n = 0.0, 0
        for s in range(0, len(idx), batch_size):
            sl = slice(s, s + batch_size)
            b = [torch.from_numpy(a[sl]).to(device) for a in (users, pos, neg)]
            loss = loss_fn(*b)
            if not torch.isfinite(loss):
                raise TrainingError(f"aggregator loss became {float(loss)}; lower the learning rate ({lr})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot += float(loss.detach())
            n += 1
        hist.append(tot / max(n, 1))
    return hist
