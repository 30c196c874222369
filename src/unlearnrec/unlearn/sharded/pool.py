"""Training the shards' sub-models: one fresh backbone per shard with the normal training loop (in spawned
processes when asked), and :func:`bpr_epochs`, the small Adam/BPR loop of the aggregators.

A job with a ``cache`` directory keeps its shard's embeddings there as soon as it is trained, under a
hash of everything the training depends on (:func:`job_key`); :func:`train_or_reuse` serves a cached
shard instead of training it again. A partition baseline's preparation and forgetting train ten shards for
tens of minutes each on Yelp2018; stopped half-way, they resume from the shards already trained.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from unlearnrec.data.graph import Graph
from unlearnrec.data.interactions import Interactions
from unlearnrec.data.sampling import sample_negatives
from unlearnrec.errors import TrainingError
from unlearnrec.io.checkpoint import atomic_write_bytes

log = logging.getLogger(__name__)


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
    cache: str = ""  # a directory where the trained shard is kept (empty: none)


def job_key(job: ShardJob) -> str:
    """What one shard's training depends on: its edges, id space, backbone, recipe, seed and device type."""
    h = hashlib.sha256()
    recipe = [job.num_users, job.num_items, job.backbone, job.backbone_config, job.epochs, job.lr,
              job.batch_size, job.seed, torch.device(job.device).type]  # fmt: skip
    h.update(json.dumps(recipe, sort_keys=True, default=str).encode())
    h.update(np.ascontiguousarray(job.users, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(job.items, dtype=np.int64).tobytes())
    return h.hexdigest()[:32]


def _cache_file(job: ShardJob) -> Path:
    return Path(job.cache) / f"shard-{job_key(job)}.npz"


def cached_shard(job: ShardJob) -> tuple[np.ndarray, float] | None:
    """(embeddings, training seconds) of a shard already trained into ``job.cache``; None if not there."""
    if not job.cache:
        return None
    path = _cache_file(job)
    if not path.is_file():
        return None
    try:
        with np.load(path) as z:
            emb, seconds = np.asarray(z["embeddings"], dtype=np.float32), float(z["seconds"])
    except (OSError, KeyError, ValueError) as e:
        log.warning("cached shard %s unreadable (%s); training it again", path, e)
        return None
    if emb.shape[0] != job.num_users + job.num_items or not np.isfinite(emb).all():
        log.warning("cached shard %s does not fit its job; training it again", path)
        return None
    return emb, seconds


def train_one_shard(job: ShardJob) -> np.ndarray:
    """Train a fresh backbone on one shard's edges; returns its final embeddings Ē (N, d) float32.

    The graph keeps the full id space; nodes without an edge in the shard keep their initial
    layer-0 rows (they are never in a batch).
    """
    from unlearnrec.backbones import build_backbone
    from unlearnrec.train.loop import TrainConfig, fit

    if job.threads:
        torch.set_num_threads(job.threads)
    t0 = time.perf_counter()
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
    emb = torch.cat([u, i]).float().cpu().numpy()
    if job.cache:  # kept at once: a pool stopped later resumes from here
        seconds = time.perf_counter() - t0
        atomic_write_bytes(_cache_file(job), writer=lambda f: np.savez(f, embeddings=emb, seconds=seconds))
    return emb


def train_or_reuse(jobs: list[ShardJob], workers: int = 1) -> tuple[list[np.ndarray], float]:
    """:func:`train_shards`, serving the shards already in their job's ``cache`` instead of training them.

    Returns the embeddings of every job, in order, and the training seconds of the shards served from
    the cache (work an earlier, stopped call did). In a ``torch.distributed`` group the cache is not
    read (the ranks must agree on which shards to train).
    """
    from unlearnrec.train import distributed

    out: list[np.ndarray | None] = [None] * len(jobs)
    reused = 0.0
    for n, job in enumerate(jobs):
        hit = cached_shard(job) if distributed.current().world == 1 else None
        if hit is not None:
            out[n], reused = hit[0], reused + hit[1]
    todo = [n for n in range(len(jobs)) if out[n] is None]
    if len(todo) < len(jobs):
        log.info("%d of %d shards from %s", len(jobs) - len(todo), len(jobs), jobs[0].cache)
    for n, emb in zip(todo, train_shards([jobs[n] for n in todo], workers), strict=True):
        out[n] = emb
    return out, reused  # type: ignore[return-value]


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
