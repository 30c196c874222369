"""The Unlearner contract: ``prepare(model, train)`` once, then ``forget(model, train, request)``."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from unlearnrec.data.interactions import Interactions
from unlearnrec.errors import RequestError
from unlearnrec.model import TrainedModel


@dataclass(frozen=True)
class Request:
    """An unlearning request E_Δ: training edges to forget, plus whole users/items (if any).

    ``edges`` always holds every edge to remove (a whole user's request holds all its edges);
    ``users`` / ``items`` list nodes forgotten entirely (no recommendations for / of them).
    """

    edges: Interactions
    users: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    items: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.edges)

    @classmethod
    def of_edges(cls, train: Interactions, users, items) -> Request:
        """A request for explicit edges; each must be a training edge, none repeated."""
        users = np.asarray(users, dtype=np.int64).ravel()
        items = np.asarray(items, dtype=np.int64).ravel()
        if len(users) != len(items):
            raise RequestError("request needs as many users as items")
        if len(users) == 0:
            raise RequestError("empty request: no edges to forget")
        for ids, n, what in ((users, train.num_users, "user"), (items, train.num_items, "item")):
            bad = ids[(ids < 0) | (ids >= n)]
            if len(bad):
                raise RequestError(f"unknown {what} id {int(bad[0])} (valid: 0..{n - 1})")
        keys = users * max(train.num_items, 1) + items
        uniq, counts = np.unique(keys, return_counts=True)
        if (counts > 1).any():
            k = int(uniq[counts > 1][0])
            raise RequestError(
                f"duplicate edge in request (user {k // train.num_items}, item {k % train.num_items})"
            )
        edges = Interactions(users, items, train.num_users, train.num_items)
        train.locate(edges)  # every edge must be a training edge
        return cls(edges)

    @classmethod
    def of_users(cls, train: Interactions, users) -> Request:
        """Forget whole users: all their training edges; they get no recommendations afterwards."""
        users = _check_ids(users, train.num_users, "user")
        return cls(train.of_users(users), users=users)

    @classmethod
    def of_items(cls, train: Interactions, items) -> Request:
        """Forget whole items: all their training edges; they are never recommended afterwards."""
        items = _check_ids(items, train.num_items, "item")
        return cls(train.of_items(items), items=items)

    def merge(self, other: Request) -> Request:
        """The union of two requests (cumulative forgetting)."""
        return Request(
            self.edges.union(other.edges),
            np.union1d(self.users, other.users),
            np.union1d(self.items, other.items),
        )


def _check_ids(ids, n: int, what: str) -> np.ndarray:
    ids = np.asarray(ids, dtype=np.int64).ravel()
    if len(ids) == 0:
        raise RequestError(f"empty request: no {what}s given")
    bad = ids[(ids < 0) | (ids >= n)]
    if len(bad):
        raise RequestError(f"unknown {what} id {int(bad[0])} (valid: 0..{n - 1})")
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise RequestError(f"duplicate {what} id {int(uniq[counts > 1][0])} in request")
    return uniq


@dataclass
class Result:
    """What ``forget`` returns: the new model (never the input object), cost and details."""

    model: TrainedModel
    seconds: float
    peak_memory_mb: float
    info: dict[str, Any] = field(default_factory=dict)


class Unlearner:
    """Base class of forgetting methods.

    ``prepare(model, train)`` does the one-off work (pre-training, shards, caches) and may be
    skipped by methods that need none. ``forget(model, train, request)`` returns a
    :class:`Result` whose model has been trained on (or made to behave as if trained on)
    ``train`` without ``request.edges``. Neither method mutates its inputs. Implementations
    override ``_forget``; ``forget`` adds timing, peak memory, and node erasure.

    Constructors take ``(config: <Method>Config, seed: int = 0)``; see ``unlearn/registry.py``.
    """

    name = "base"

    def prepare(self, model: TrainedModel, train: Interactions) -> None:
        """One-off preparation (default: nothing)."""

    def save_prepared(self, directory: str | os.PathLike) -> bool:
        """Persist what ``prepare`` built (for the runner's cache); False if there is nothing."""
        return False

    def load_prepared(self, directory: str | os.PathLike, model: TrainedModel) -> bool:
        """Restore what ``save_prepared`` wrote; False if nothing usable is there."""
        return False

    def _forget(
        self, model: TrainedModel, train: Interactions, request: Request
    ) -> tuple[TrainedModel, dict]:
        raise NotImplementedError

    def forget(self, model: TrainedModel, train: Interactions, request: Request) -> Result:
        with MemoryMeter(model.graph.device) as mem:
            t0 = time.perf_counter()
            new, info = self._forget(model, train, request)
            new = erase_nodes(new, request)
            seconds = time.perf_counter() - t0
        new.meta = {**model.meta, **new.meta}
        new.meta.setdefault("lineage", list(model.meta.get("lineage", [])))
        new.meta["lineage"] = [
            *model.meta.get("lineage", []),
            {
                "method": self.name,
                "edges": len(request),
                "users": len(request.users),
                "items": len(request.items),
                "request_fingerprint": request.edges.fingerprint(),
                "seconds": seconds,
            },
        ]
        return Result(new, seconds, mem.peak_mb, info)


def erase_nodes(model: TrainedModel, request: Request) -> TrainedModel:
    """Zero the layer-0 rows of forgotten users/items and record them as forgotten."""
    if len(request.users) == 0 and len(request.items) == 0:
        return model
    with torch.no_grad():
        e0 = model.backbone.e0
        if len(request.users):
            e0[torch.as_tensor(request.users, device=e0.device)] = 0
        if len(request.items):
            e0[torch.as_tensor(request.items + model.train.num_users, device=e0.device)] = 0
    model.forgotten_users = np.union1d(model.forgotten_users, request.users).astype(np.int64)
    model.forgotten_items = np.union1d(model.forgotten_items, request.items).astype(np.int64)
    return model


class MemoryMeter:
    """Peak memory of a block: CUDA peak allocation on a GPU, else the growth of peak RSS (MiB).

    On CPU the process's peak RSS (``ru_maxrss``) only grows, so a block that stays under an
    earlier peak reports 0; ``tracemalloc`` would miss torch's allocations. We sample the
    current RSS on entry and the high-water mark on exit, and report their difference.
    """

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.peak_mb = 0.0

    def __enter__(self) -> MemoryMeter:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            self._base = _rss_mb()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mb = (torch.cuda.max_memory_allocated(self.device) - self._base) / 2**20
        else:
            self.peak_mb = max(_maxrss_mb() - self._base, 0.0)


def _rss_mb() -> float:
    try:
        with open(f"/proc/{os.getpid()}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:  # non-Linux
        return _maxrss_mb()


def _maxrss_mb() -> float:
    import resource
    import sys

    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 2**20 if sys.platform == "darwin" else r / 1024
