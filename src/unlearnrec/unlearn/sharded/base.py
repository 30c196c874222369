"""The SISA skeleton shared by RecEraser and GraphEraser: partition, one sub-model per shard, an aggregator;
forgetting retrains the touched shards only. :class:`FixedEmbedding` serves an ensemble's final
embeddings through the ordinary ``TrainedModel`` API."""

from __future__ import annotations

import copy
import logging
import os
import time

import numpy as np
import torch

from unlearnrec.backbones.fixed import FixedEmbedding, FixedEmbeddingConfig  # noqa: F401 (re-export)
from unlearnrec.config import to_dict
from unlearnrec.data.graph import Graph
from unlearnrec.data.interactions import Interactions
from unlearnrec.errors import UnlearnRecError
from unlearnrec.io.checkpoint import load_checkpoint, save_checkpoint
from unlearnrec.model import TrainedModel
from unlearnrec.unlearn.base import Request, Unlearner
from unlearnrec.unlearn.sharded.partition import Partition
from unlearnrec.unlearn.sharded.pool import ShardJob, shard_seed, train_or_reuse

log = logging.getLogger(__name__)


# The ranges of the settings every sharded method's config shares (RecEraser, GraphEraser; config.RANGES)
SHARD_RANGES = {
    "slack": ">= 0",
    "shard_epochs": "[0, 100000]",
    "agg_epochs": "[0, 100000]",
    "lr": "(0, 100]",
    "agg_lr": "(0, 100]",
    "batch_size": "[1, 16777216]",
    "agg_batch_size": "[1, 16777216]",
    "workers": "[1, 256]",
}


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
                    cache=str(self.scratch("shards") or ""),
                )
            )
        workers = cfg.workers if torch.device(device).type == "cpu" else 1
        emb, reused = train_or_reuse(jobs, workers)
        self.carry(reused)
        return emb

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
        return model.derive(
            backbone,
            graph,
            backbone_name="fixed",
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
    return model.derive(copy.deepcopy(model.backbone))
