"""The Unlearner contract: ``prepare(model, train)`` once, then ``forget(model, train, request)``."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unlearnrec.data.interactions import Interactions
from unlearnrec.errors import ConfigError, RequestError
from unlearnrec.model import TrainedModel
from unlearnrec.runtime import release_free_memory

#: meta keys that describe a measurement of a model (its test metrics, its training time and
#: length): a forgotten model does not inherit them from its input, only what its unlearner sets
MEASURED_META = ("metrics", "train_seconds", "epochs_run")


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

    Optional capabilities are declared here, never probed with ``hasattr``:

    - ``uses_validation``: the method early-stops on the validation split given by
      :meth:`set_validation` (a no-op for the others, so callers always call it);
    - ``supports_cumulative``: the method overrides :meth:`forget_cumulative` (serve a request
      against the stored original together with everything already forgotten).

    Resumable work: a caller may give a scratch directory (:meth:`set_scratch`) where a method keeps
    what it trains for one request (a training's state, trained shards) so that a call stopped half-way
    and repeated resumes it. Work reused that way counts in the seconds reported (:meth:`carry`).
    """

    name = "base"
    uses_validation: bool = False
    _scratch: Path | None = None
    _scratch_every: float = 600.0
    _carried: float = 0.0

    def set_validation(self, val: Interactions | None) -> Unlearner:
        """The validation split (edges disjoint from training); used where ``uses_validation``."""
        return self

    def set_scratch(self, directory: str | os.PathLike | None, every: float = 600.0) -> Unlearner:
        """A directory for this request's resumable work (None: none), a training's state saved at
        most every ``every`` seconds; the caller removes it once it has kept the result. Methods that
        train for long use it; the others ignore it."""
        self._scratch = None if directory is None else Path(directory)
        self._scratch_every = float(every)
        return self

    def scratch(self, name: str) -> Path | None:
        """The sub-directory ``name`` of the scratch directory, or None without one."""
        return None if self._scratch is None else self._scratch / name

    def carry(self, seconds: float) -> None:
        """Count ``seconds`` of work an earlier, stopped call did and this one reused (from the scratch)."""
        self._carried = self._carried + float(seconds)

    def take_carried(self) -> float:
        """The seconds carried since the last call (and reset them): added to what was measured."""
        carried, self._carried = self._carried, 0.0
        return carried

    @property
    def supports_cumulative(self) -> bool:
        """Whether :meth:`forget_cumulative` is implemented (overridden) by this method."""
        return type(self).forget_cumulative is not Unlearner.forget_cumulative

    def forget_cumulative(self, original: TrainedModel, current: TrainedModel, request: Request) -> Result:
        """Forget ``request`` on top of everything ``current`` (derived from ``original``) forgot."""
        raise ConfigError(f"cumulative forgetting is not supported by method '{self.name}'")

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
        carried = self.take_carried()
        if carried:  # work done by an earlier, stopped call counts as this call's
            seconds += carried
            info = {**info, "resumed_seconds": carried}
        # the input's recipe and provenance carry over; what was measured on the input does not
        inherited = {k: v for k, v in model.meta.items() if k not in MEASURED_META}
        new.meta = {**inherited, **new.meta}
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
    """Peak memory of a block in MiB: CUDA peak allocation on a GPU, else the peak RSS growth.

    On Linux the kernel's RSS high-water mark is reset on entry (``/proc/self/clear_refs``) and
    read on exit (``VmHWM``), so the figure is this block's own peak above the RSS at entry,
    whatever ran before it. Where that is not possible, RSS is sampled every 2 ms by a thread.
    Memory the C library holds free is given back first, so that the block cannot reuse it unseen.
    """

    def __init__(self, device: torch.device | str = "cpu", interval: float = 0.002):
        self.device = torch.device(device)
        self.interval = interval
        self.peak_mb = 0.0

    def __enter__(self) -> MemoryMeter:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            return self
        release_free_memory()  # what glibc keeps free would be reused unseen (runtime.tune_allocator)
        self._base = _rss_mb()
        self._hwm = _reset_hwm()
        if not self._hwm:
            import threading

            self._stop = threading.Event()
            self._seen = self._base

            def sample() -> None:
                while not self._stop.wait(self.interval):
                    self._seen = max(self._seen, _rss_mb())

            self._thread = threading.Thread(target=sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mb = (torch.cuda.max_memory_allocated(self.device) - self._base) / 2**20
            return
        if self._hwm:
            peak = max(_status_mb("VmHWM"), _rss_mb())
        else:
            self._stop.set()
            self._thread.join()
            peak = max(self._seen, _rss_mb())
        self.peak_mb = max(peak - self._base, 0.0)


def _reset_hwm() -> bool:
    """Reset the kernel's peak-RSS counter of this process; False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_mb("VmHWM") > 0
    except OSError:
        return False


def _status_mb(key: str) -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _rss_mb() -> float:
    """Current resident set size in MiB (0 where /proc is missing)."""
    return _status_mb("VmRSS")
