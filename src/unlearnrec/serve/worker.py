# long file: the single writer (batching, cumulative forgetting, crash recovery, fine-tuning); issue 19
"""The single writer: applies queued deletion requests as new model versions.

One thread takes the queued requests in the order they were accepted, merges what has
accumulated (at most ``max_batch``), and applies UnlearnRec Ours(0) *cumulatively from the base
model*: the new version is ``forget(base, union of every applied request + the batch)``, a pure
function of the base and that set, so redoing a step after a crash gives the same model. Then:

1. the version is written atomically (:meth:`VersionStore.publish`: staging dir, fsync, rename);
2. ONE database transaction records the version, moves the batch ``queued -> applied`` and
   appends one ledger entry per request (:meth:`Store.publish`, the transactional outbox);
3. the served model is swapped (one reference assignment: readers never block and never see a
   half-built version);
4. each request's verification (structural checks, MI-BF / MI-NG / membership AUC) is stored.

A crash between 1 and 2 leaves an unrecorded directory, removed and recomputed at restart; a
crash after 2 is complete (the restart serves the latest recorded version, and recomputes any
verification that is missing). Nothing is applied twice: step 2 moves only rows still queued and
the ledger holds one entry per request (unique constraint).

When the queue has been idle for a while, Ours(k) fine-tuning (off by default) publishes the same
request set as a fine-tuned version and moves its requests ``applied -> finetuned``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from sqlalchemy.exc import DBAPIError

from unlearnrec.data.interactions import Interactions
from unlearnrec.eval.membership import edge_scores, membership_auc, mi_bf, mi_ng, sample_non_edges
from unlearnrec.model import TrainedModel
from unlearnrec.serve.store import HONOURED, Store, StoreError
from unlearnrec.serve.versions import VersionStore
from unlearnrec.unlearn.base import Request, Unlearner
from unlearnrec.unlearn.verify import Verification

log = logging.getLogger(__name__)

METHOD = "unlearnrec/ours0"
# fewer forgotten edges than this make MI-NG noise: reported, not judged
MIN_EDGES_FOR_MI = 10


@dataclass(frozen=True)
class Served:
    """An immutable snapshot of the model being served (swapped whole, never modified).

    ``user_emb`` (U, d) / ``item_emb`` (I, d): final embeddings; ``banned`` (I,) bool: forgotten
    items, never recommended; ``forgotten_users``: users who get no recommendations.
    """

    version: int
    kind: str
    model: TrainedModel
    user_emb: torch.Tensor
    item_emb: torch.Tensor
    banned: torch.Tensor
    forgotten_users: frozenset[int]

    @classmethod
    def of(cls, version: int, kind: str, model: TrainedModel) -> Served:
        ue, ie = model.embeddings()
        banned = torch.zeros(model.train.num_items, dtype=torch.bool)
        if len(model.forgotten_items):
            banned[torch.as_tensor(np.asarray(model.forgotten_items, np.int64))] = True
        return cls(
            version,
            kind,
            model,
            ue.detach().cpu().contiguous(),
            ie.detach().cpu().contiguous(),
            banned,
            frozenset(int(u) for u in model.forgotten_users),
        )

    @torch.no_grad()
    def recommend(self, user: int, k: int, exclude: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (items, scores) for ``user``: seen items (row ``user`` of ``exclude``) and
        forgotten items are never returned, so fewer than ``k`` may come back."""
        scores = self.item_emb @ self.user_emb[user]
        seen = exclude.indices[exclude.indptr[user] : exclude.indptr[user + 1]]
        if len(seen):
            scores[torch.as_tensor(seen.astype(np.int64))] = -torch.inf
        scores[self.banned] = -torch.inf
        k = min(int(k), scores.numel())
        top = torch.topk(scores, k)
        ok = torch.isfinite(top.values)
        return top.indices[ok].numpy(), top.values[ok].numpy()


class BaseIndex:
    """Where each user's and each item's edges sit in the base training set, so that a user or
    item request resolves in O(its edges) instead of a pass over every training edge."""

    def __init__(self, train: Interactions):
        self.train = train
        self.user_ptr = np.concatenate([[0], np.cumsum(train.user_degrees())])
        self.item_order = np.argsort(train.items, kind="stable")
        self.item_ptr = np.concatenate([[0], np.cumsum(train.item_degrees())])

    def _take(self, ptr: np.ndarray, ids, order: np.ndarray | None = None) -> Interactions:
        parts = [np.arange(ptr[i], ptr[i + 1]) for i in ids]
        idx = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        if order is not None:
            idx = order[idx]
        return self.train.subset(np.sort(idx))

    def request(self, row: dict[str, Any]) -> Request:
        """The :class:`Request` a stored deletion row asks for (equal to ``Request.of_users`` /
        ``of_items`` / explicit edges on the base training set)."""
        ids = json.loads(row["payload"])
        tr = self.train
        if row["kind"] == "users":
            users = np.unique(np.asarray(ids, np.int64))
            return Request(self._take(self.user_ptr, users), users=users)
        if row["kind"] == "items":
            items = np.unique(np.asarray(ids, np.int64))
            return Request(self._take(self.item_ptr, items, self.item_order), items=items)
        a = np.asarray(ids, dtype=np.int64).reshape(-1, 2)
        return Request(Interactions(a[:, 0], a[:, 1], tr.num_users, tr.num_items))


def request_of(row: dict[str, Any], train: Interactions) -> Request:
    """The :class:`Request` a stored deletion row asks for, resolved against the base ``train``."""
    return BaseIndex(train).request(row)


def merge_all(first: Request, more: Sequence[Request]) -> Request:
    """The union of ``first`` and ``more`` in one pass (``Request.merge`` pairwise costs a pass over
    the growing union for each request)."""
    reqs = [first, *more]
    e = first.edges
    edges = Interactions.from_pairs(
        np.concatenate([r.edges.users for r in reqs]),
        np.concatenate([r.edges.items for r in reqs]),
        e.num_users,
        e.num_items,
        dedupe=True,
    )
    users = np.unique(np.concatenate([np.asarray(r.users, np.int64) for r in reqs]))
    items = np.unique(np.concatenate([np.asarray(r.items, np.int64) for r in reqs]))
    return Request(edges, users, items)


def empty_request(train: Interactions) -> Request:
    return Request(Interactions.empty(train.num_users, train.num_items))


def set_fingerprint(req: Request, salt: bytes = b"") -> str:
    """sha256 of a (cumulative) request set: its edges' fingerprint and the erased node ids;
    keyed BLAKE2b with the deployment's ``salt`` when given (retention: a plain hash of a small
    set can be reversed by trying every candidate edge)."""
    h = hashlib.blake2b(key=salt[:64], digest_size=32) if salt else hashlib.sha256()
    h.update(req.edges.fingerprint().encode())
    h.update(b"|users:" + np.sort(np.asarray(req.users, np.int64)).astype("<i8").tobytes())
    h.update(b"|items:" + np.sort(np.asarray(req.items, np.int64)).astype("<i8").tobytes())
    return h.hexdigest()


class Worker:
    """The service's single writer thread (see the module docstring).

    ``method`` is an UnlearnRec with its encoder loaded, configured for Ours(0);
    ``finetune_method`` (optional) the same with ``finetune_epochs = k`` for idle fine-tuning.
    ``known``: every edge ever seen (for membership negatives); ``data`` (optional) a Dataset
    for the versions' test metrics, computed once the queue has been idle ``metrics_idle_s``.
    ``on_applied(latencies, forget_seconds, step_seconds)`` gets the accepted-to-applied seconds
    of each request of a published version, its forgetting step's and its whole step's seconds.
    """

    def __init__(
        self,
        store: Store,
        versions: VersionStore,
        base: TrainedModel,
        method: Unlearner,
        *,
        known: Interactions | None = None,
        data=None,
        max_batch: int = 1000,
        finetune_method: Unlearner | None = None,
        finetune_idle_s: float = 5.0,
        metrics_idle_s: float = 60.0,
        verify: bool = True,
        seed: int = 0,
        on_applied: Callable[[list[float], float, float], None] | None = None,
    ):
        self.store = store
        self.versions = versions
        self.base = base
        self.method = method
        self.finetune_method = finetune_method
        self.finetune_idle_s = float(finetune_idle_s)
        self.metrics_idle_s = float(metrics_idle_s)
        self.known = known if known is not None else base.train
        self.data = data
        self.max_batch = int(max_batch)
        self.verify_enabled = verify
        self.seed = int(seed)
        self.on_applied = on_applied
        self._served: Served | None = None
        self._cum = empty_request(base.train)
        self.index = BaseIndex(base.train)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # verification and metrics run beside the writer, off the deletion-to-effect path
        self._bg: queue.Queue = queue.Queue()
        self._bg_thread: threading.Thread | None = None
        self._base_emb: tuple[torch.Tensor, torch.Tensor] | None = None
        self._idle_since = time.monotonic()
        self.last_error: str | None = None
        self.on_failed: Callable[[], None] | None = None
        # retention (issue #20): the fingerprint salt, and the compactor's tick (run on this
        # thread before each step, so that a compaction's snapshot and install never race a step)
        self.salt: bytes = b""
        self.before_step: Callable[[], None] | None = None

    # ------------------------------------------------------------------------ state
    @property
    def served(self) -> Served:
        s = self._served
        if s is None:
            raise StoreError("no model is being served yet")
        return s

    def request_fingerprint(self, req: Request) -> str:
        """The ledger's fingerprint of one request: salted when the service has a salt (retention:
        the ledger outlives the purge, so it must not hold what a plain hash would reveal)."""
        if not self.salt:
            return req.edges.fingerprint()
        from unlearnrec.serve.retention import Fingerprints

        return Fingerprints(self.salt).request(req.edges.fingerprint(), req.users, req.items)

    def salted(self, value: str) -> str:
        if not self.salt:
            return value
        return hashlib.blake2b(value.encode(), key=self.salt[:64], digest_size=32).hexdigest()

    def absorbed(self) -> set[int]:
        """Ids of the installed compactions (their requests are in the current base)."""
        from sqlalchemy import select

        from unlearnrec.serve.store import compactions

        with self.store.engine.connect() as c:
            return {
                int(i)
                for (i,) in c.execute(
                    select(compactions.c.id).where(compactions.c.status.in_(("done", "purged")))
                )
            }

    @property
    def ready(self) -> bool:
        threads = [t for t in (self._thread, self._bg_thread) if t is not None]
        return self._served is not None and all(t.is_alive() for t in threads)

    def recover(self) -> None:
        """Bring memory in line with the database: drop unrecorded version directories, serve
        the latest recorded version, rebuild the applied set, and finish missing verifications."""
        recorded = self.store.versions()
        live = {int(v["version"]) for v in recorded}
        removed = self.versions.cleanup(live - {0})
        if removed:
            log.warning("removed unrecorded version directories %s (a crash before their commit)", removed)
        latest = recorded[-1]
        v = int(latest["version"])
        at_base = latest["kind"] in ("base", "compacted")
        model = self.base if at_base else self.versions.load(v, device=self.base.graph.device)
        rows = self.store.with_status(HONOURED)
        # requests a compaction absorbed into the current base are not applied on top of it
        absorbed = self.absorbed()
        rows = [r for r in rows if r.get("compaction") is None or r["compaction"] not in absorbed]
        cum = merge_all(empty_request(self.base.train), [self.index.request(r) for r in rows])
        if set_fingerprint(cum, self.salt) != latest["set_fingerprint"]:
            raise StoreError(
                f"version {v} records another request set than the applied requests: state is inconsistent"
            )
        self._cum = cum
        self._served = Served.of(v, latest["kind"], model)
        missing = [r for r in rows if r["verification"] is None]
        if missing and self.verify_enabled:
            self._verify(self._served, missing)
        log.info("serving version %d (%d applied requests)", v, len(rows))

    # ------------------------------------------------------------------------ thread
    def start(self) -> None:
        self.recover()
        self._bg_thread = threading.Thread(target=self._bg_run, name="unlearnrec-verifier", daemon=True)
        self._bg_thread.start()
        self._thread = threading.Thread(target=self._run, name="unlearnrec-worker", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        """A request was queued: wake the worker now rather than at its next poll."""
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._bg_thread is not None:
            self._bg.put(None)
            self._bg_thread.join(timeout)

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                if self.before_step is not None:
                    self.before_step()
                done = self.step()
                backoff = 0.5
                if done:
                    continue
                self._idle_work()
            except DBAPIError as e:  # the database is away: keep the requests, retry
                self.last_error = f"database error: {e.__class__.__name__}"
                log.error("worker: %s; retrying in %.1fs", e, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            except Exception as e:  # never die silently: record, wait, go on
                self.last_error = f"{e.__class__.__name__}: {e}"
                log.exception("worker step failed")
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            self._wake.wait(0.5)
            self._wake.clear()

    # ------------------------------------------------------------------------ one step
    def step(self) -> int:
        """Apply the queued requests (one batch) as one new version; returns how many were handled."""
        rows = self.store.queued(self.max_batch)
        if not rows:
            return 0
        self._idle_since = time.monotonic()
        try:
            self._apply(rows)
        except DBAPIError:
            raise
        except Exception as e:
            if len(rows) == 1:
                log.error("request %d failed: %s", rows[0]["id"], e)
                self.store.mark_failed(int(rows[0]["id"]), f"{e.__class__.__name__}: {e}")
                self._failed()
                return 1
            log.warning("a batch of %d failed (%s); applying one at a time", len(rows), e)
            for r in rows:
                try:
                    self._apply([r])
                except DBAPIError:
                    raise
                except Exception as e1:
                    log.error("request %d failed: %s", r["id"], e1)
                    self.store.mark_failed(int(r["id"]), f"{e1.__class__.__name__}: {e1}")
                    self._failed()
        return len(rows)

    def _failed(self) -> None:
        if self.on_failed is not None:
            self.on_failed()

    def _apply(self, rows: Sequence[dict[str, Any]]) -> None:
        t_start = time.perf_counter()
        reqs = [self.index.request(r) for r in rows]
        merged = merge_all(self._cum, reqs)
        res = self.method.forget(self.base, self.base.train, merged)
        new = res.model
        latest = self.store.latest_version()
        v = int(latest["version"]) + 1
        fp = set_fingerprint(merged, self.salt)
        counts = self.store.counts()
        n_requests = sum(counts[s] for s in HONOURED) + len(rows)
        # the served snapshot (one propagation) is built while the version is written and
        # committed (mostly fsync waits); it is swapped in only after the commit
        snapshot: dict[str, Any] = {}

        def build() -> None:
            try:
                snapshot["served"] = Served.of(v, "ours0", new)
            except BaseException as e:  # re-raised below, after the commit, in this thread
                snapshot["error"] = e

        builder = threading.Thread(target=build, name="unlearnrec-snapshot", daemon=True)
        builder.start()
        try:
            path = self.versions.publish(
                v, new, serve={"version": v, "set_fingerprint": fp, "requests": n_requests}
            )
            self._commit(v, latest, fp, n_requests, merged, path, res, rows, reqs)
        finally:
            builder.join()
        if "error" in snapshot:
            raise snapshot["error"]
        # the version is durable and recorded: serve it
        self._served = snapshot["served"]
        self._cum = merged
        now = self._committed_at
        log.info(
            "version %d: %d requests (%d edges in all) in %.3fs (forget %.3fs)",
            v,
            len(rows),
            len(merged.edges),
            time.perf_counter() - t_start,
            res.seconds,
        )
        if self.on_applied is not None:
            self.on_applied(
                [now - float(r["accepted_at"]) for r in rows], res.seconds, time.perf_counter() - t_start
            )
        if self.verify_enabled:
            if self._bg_thread is not None:
                self._bg.put((self._served, rows, reqs))
            else:
                self._verify(self._served, rows, reqs)

    def _commit(self, v, latest, fp, n_requests, merged, path, res, rows, reqs) -> None:
        """The outbox transaction of a written version: its row, its requests applied, their entries."""
        train_fp = json.loads((path / "meta.json").read_text())["train_fingerprint"]  # hashed once, by save
        vrow = {
            "version": v,
            "parent": int(latest["version"]),
            "kind": "ours0",
            "method": METHOD,
            "set_fingerprint": fp,
            "requests": n_requests,
            "edges": len(merged.edges),
            "users": len(merged.users),
            "items": len(merged.items),
            "train_fingerprint": train_fp,
            "path": str(path),
            "created_at": time.time(),
            "seconds": res.seconds,
        }
        entries = [
            {
                "kind": r["kind"],
                "request_fingerprint": self.request_fingerprint(q),
                "edges": len(q.edges),
                "users": len(q.users),
                "items": len(q.items),
                "version": v,
                "set_fingerprint": fp,
                "model_fingerprint": self.salted(train_fp),
                "method": METHOD,
            }
            for r, q in zip(rows, reqs, strict=True)
        ]
        now = time.time()
        self.store.publish(vrow, rows, entries, now=now)
        self._committed_at = now

    # ------------------------------------------------------------------------ verification
    def _base_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._base_emb is None:
            self._base_emb = self.base.embeddings()
        return self._base_emb

    def _verify(
        self, served: Served, rows: Sequence[dict[str, Any]], reqs: Sequence[Request] | None = None
    ) -> None:
        if reqs is None:
            reqs = [self.index.request(r) for r in rows]
        out = {
            int(r["id"]): verify_request(self, served, q, int(r["id"]))
            for r, q in zip(rows, reqs, strict=True)
        }
        self.store.set_verification(out)

    # ------------------------------------------------------------------------ idle work
    def _idle_work(self) -> None:
        served = self._served
        if served is None:
            return
        idle = time.monotonic() - self._idle_since
        if self.finetune_method is not None and served.kind == "ours0" and idle >= self.finetune_idle_s:
            self._finetune(served)
            return
        if self._bg_thread is None:
            self._maybe_metrics()

    def _maybe_metrics(self) -> None:
        """The served version's test metrics, once the queue has been quiet ``metrics_idle_s``
        (full ranking costs seconds on a large dataset: never between two versions under load)."""
        served = self._served
        if self.data is None or served is None or time.monotonic() - self._idle_since < self.metrics_idle_s:
            return
        latest = self.store.latest_version()
        if latest is not None and latest["metrics"] is None and int(latest["version"]) == served.version:
            test = served.model.evaluate(self.data, "test", ks=(20,))
            self.store.set_metrics(served.version, {"test": test})

    def _bg_run(self) -> None:
        while True:
            try:
                item = self._bg.get(timeout=1.0)
            except queue.Empty:
                item = False
            if item is None:
                return
            try:
                if item:
                    self._verify(*item)
                else:
                    self._maybe_metrics()
            except Exception as e:  # recomputed at the next start if it was a verification
                self.last_error = f"{e.__class__.__name__}: {e}"
                log.exception("verification or metrics failed")

    def _finetune(self, served: Served) -> None:
        applied = self.store.with_status(("applied",))
        latest = self.store.latest_version()
        if int(latest["version"]) != served.version:
            return
        res = self.finetune_method.forget(self.base, self.base.train, self._cum)
        if self.store.queued(1):  # requests came in meanwhile: they go first, fine-tune later
            self._idle_since = time.monotonic()
            return
        v = served.version + 1
        path = self.versions.publish(v, res.model, serve={"version": v, "finetuned_from": served.version})
        row = {
            **{k: latest[k] for k in ("set_fingerprint", "requests", "edges", "users", "items")},
            "version": v,
            "parent": served.version,
            "kind": "finetune",
            "method": _finetune_label(self.finetune_method.config.finetune_epochs, res.info),
            "train_fingerprint": res.model.train.fingerprint(),
            "path": str(path),
            "created_at": time.time(),
            "seconds": res.seconds,
        }
        self.store.publish_finetuned(row, [int(r["id"]) for r in applied])
        self._served = Served.of(v, "finetune", res.model)
        log.info("version %d: fine-tuned version %d in %.1fs", v, served.version, res.seconds)


def _finetune_label(k: int, info: dict) -> str:
    """The method of an idle fine-tuning version, saying so when its fine-tuning was skipped (the
    encoder config's ``finetune_min_mi_ng`` gate, or no validation split for its guard)."""
    if "finetune_skipped" in info:
        return f"unlearnrec/ours(0): fine-tuning skipped ({info['finetune_skipped']})"
    return f"unlearnrec/ours({k})"


def verify_request(worker: Worker, served: Served, req: Request, seed: int = 0) -> dict[str, Any]:
    """Structural checks and membership inference of one request against the served version."""
    v = Verification()
    model = served.model
    present = model.train.intersects(req.edges)
    v.add("edges_absent", present == 0, f"{present} of {len(req.edges)} requested edges in the served graph")
    if len(req.users) or len(req.items):
        e0 = model.backbone.e0.detach()
        rows = np.concatenate([req.users, req.items + model.train.num_users]).astype(np.int64)
        zero = bool((e0[torch.as_tensor(rows)] == 0).all())
        recorded = set(req.users.tolist()) <= served.forgotten_users and bool(
            served.banned[torch.as_tensor(req.items)].all() if len(req.items) else True
        )
        v.add(
            "nodes_erased", zero and recorded, f"layer-0 rows zero={zero}, recorded as forgotten={recorded}"
        )
    # membership only on edges whose endpoints the served model still represents
    fu = np.asarray(model.forgotten_users, np.int64)
    fi = np.asarray(model.forgotten_items, np.int64)
    keep = ~np.isin(req.edges.users, fu) & ~np.isin(req.edges.items, fi)
    eu, ei = req.edges.users[keep], req.edges.items[keep]
    if len(eu):
        after = edge_scores(served.user_emb, served.item_emb, eu, ei)
        bu, bi = worker._base_embeddings()
        before = edge_scores(bu, bi, eu, ei)
        nu, ni = sample_non_edges(worker.known, eu, worker.seed + seed)
        neg = edge_scores(served.user_emb, served.item_emb, nu, ni)
        ng, bf, auc = mi_ng(neg, after), mi_bf(before, after), membership_auc(after, neg)
        judged = len(eu) >= MIN_EDGES_FOR_MI
        v.add(
            "membership",
            (ng >= 1.0) if judged else None,
            f"MI-NG {ng:.3f}, MI-BF {bf:.3f}, AUC {auc:.3f} over {len(eu)} edges"
            + ("" if judged else f" (fewer than {MIN_EDGES_FOR_MI} edges: reported, not judged)"),
            mi_ng=ng,
            mi_bf=bf,
            auc=auc,
        )
    else:
        v.add("membership", None, "not applicable: every requested edge touches an erased node")
    return {"passed": v.passed, "version": served.version, "checks": v.checks}
