# long file: the service facade (validation, views, start-up, id maps) that every HTTP route calls; issue 19
"""The forgetting service behind the HTTP routes: validation, views, start-up and metrics.

:class:`Service` owns the store, the version folder, the base model, the worker and the id maps
(the dataset's raw ids <-> the model's contiguous ids). The routes in ``app.py`` only translate
HTTP to calls here; every user error is an :class:`ApiError` (status, code, message naming the
field), rendered as ``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from unlearnrec.errors import ConfigError, UnlearnRecError
from unlearnrec.model import TrainedModel
from unlearnrec.serve.store import HONOURED, STATUSES, ConflictError, Store, body_hash
from unlearnrec.serve.versions import VersionStore
from unlearnrec.serve.worker import METHOD, Worker, empty_request, set_fingerprint

log = logging.getLogger(__name__)

DB_FILE = "service.sqlite"
KINDS = ("users", "items", "edges")


@dataclass(frozen=True)
class ServeConfig:
    """Limits and options of the service.

    ``max_body_bytes``: larger request bodies get 413; ``max_ids``: ids (or edges) one deletion
    request may name; ``max_request_edges``: edges one request may remove (a user's or an item's
    edges count); ``max_batch``: requests merged into one version; ``max_k``: largest ``k`` of a
    recommendation; ``page_limit``: largest page of a listing; ``finetune_epochs``: k of Ours(k)
    when the queue is idle (0: off); ``finetune_idle_s``: idle seconds before fine-tuning;
    ``metrics_idle_s``: idle seconds before the served version's test metrics are computed;
    ``verify``: compute each request's verification; ``seed``: of membership negatives.
    """

    max_body_bytes: int = 1 << 20
    max_ids: int = 10_000
    max_request_edges: int = 100_000
    max_batch: int = 1000
    max_k: int = 1000
    page_limit: int = 1000
    finetune_epochs: int = 0
    finetune_idle_s: float = 5.0
    metrics_idle_s: float = 60.0
    verify: bool = True
    seed: int = 0

    def __post_init__(self):
        for f in ("max_body_bytes", "max_ids", "max_request_edges", "max_batch", "max_k", "page_limit"):
            if getattr(self, f) < 1:
                raise ConfigError(f"{f} must be >= 1, got {getattr(self, f)}")
        if self.finetune_epochs < 0 or self.finetune_idle_s < 0 or self.metrics_idle_s < 0:
            raise ConfigError("finetune_epochs, finetune_idle_s and metrics_idle_s must be >= 0")


class ApiError(Exception):
    """A user-facing HTTP error: ``status``, a short machine ``code`` and one-line ``message``."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class IdMap:
    """Raw ids of a dataset (ints or strings) <-> contiguous model ids ``0..n-1``."""

    def __init__(self, raw: np.ndarray | None, n: int, what: str):
        self.what = what
        self.n = int(n)
        if raw is None or len(raw) != n:
            self.raw = None
            self._index: dict[str, int] = {}
        else:
            self.raw = np.asarray(raw)
            self._index = {str(r): i for i, r in enumerate(self.raw.tolist())}

    def lookup(self, raw: Any) -> int | None:
        """The model id of ``raw``, or None if the dataset has no such id."""
        if isinstance(raw, bool):
            return None
        if self.raw is None:
            try:
                i = int(raw)
            except (TypeError, ValueError):
                return None
            return i if 0 <= i < self.n and str(i) == str(raw).strip() else None
        return self._index.get(str(raw))

    def to_raw(self, i: int) -> Any:
        if self.raw is None:
            return int(i)
        r = self.raw[int(i)]
        return int(r) if isinstance(r, np.integer) else str(r)


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds")


def item_info(data):
    """Raw ids and titles of the dataset's items (``data.items.item_metadata``: the loader's ids,
    ML-1M MovieIDs where ``ratings.dat`` allows, ``movies.dat`` / ``u.item`` titles)."""
    from unlearnrec.data.items import ItemInfo, item_metadata

    if data is None:
        return ItemInfo(note="no dataset")
    return item_metadata(data.meta.get("folder"), data.num_items, data.meta.get("item_ids"))


class Service:
    """Everything the routes need. Build with :meth:`open`; ``start()`` recovers and starts the worker."""

    def __init__(
        self,
        store: Store,
        versions: VersionStore,
        base: TrainedModel,
        method,
        *,
        data=None,
        config: ServeConfig = ServeConfig(),
        finetune_method=None,
    ):
        self.store = store
        self.versions = versions
        self.base = base
        self.config = config
        self.data = data
        raw_u = data.meta.get("user_ids") if data is not None else None
        info = item_info(data)
        self.users = IdMap(raw_u, base.train.num_users, "user")
        self.items = IdMap(info.raw_ids, base.train.num_items, "item")
        self.titles: dict[str, str] = dict(info.titles)  # by raw id, as text
        # items a user interacted with in the base training set are never recommended back to
        # them, including those whose interaction was forgotten (a forgotten interaction must not
        # come back as a recommendation)
        self.exclude = base.train.to_csr()
        self._user_deg = base.train.user_degrees()
        self._item_deg = base.train.item_degrees()
        known = base.train
        if data is not None:
            known = known.union(data.val).union(data.test)
        from unlearnrec.serve.metrics import ServiceMetrics

        self.metrics = ServiceMetrics(self)
        self.worker = Worker(
            store,
            versions,
            base,
            method,
            known=known,
            data=data,
            max_batch=config.max_batch,
            finetune_method=finetune_method,
            finetune_idle_s=config.finetune_idle_s,
            metrics_idle_s=config.metrics_idle_s,
            verify=config.verify,
            seed=config.seed,
            on_applied=self.metrics.observe_applied,
        )
        self.worker.on_failed = self._unblock_failed
        self._lock = threading.Lock()
        self._blocked_users: set[int] = set()
        self._blocked_items: set[int] = set()
        self._blocked_edges: set[int] = set()
        self.started_at = time.time()

    # ------------------------------------------------------------------------ construction
    @classmethod
    def open(
        cls,
        model_dir: str | os.PathLike | None,
        encoder_dir: str | os.PathLike | None,
        state_dir: str | os.PathLike,
        db_url: str | None = None,
        data_dir: str | os.PathLike | None = None,
        config: ServeConfig = ServeConfig(),
        compaction=None,
    ) -> Service:
        """Load the base model, its encoder and dataset; open (or create) the state.

        Once a compaction has been installed (issue #20) the state's own compacted base and
        encoder are served and ``model_dir`` / ``encoder_dir`` may be None.
        ``compaction``: a :class:`~unlearnrec.serve.compaction.CompactionConfig` (schedule).

        One service per state directory: a second one is refused while the first runs (an
        exclusive lock on ``STATE/service.lock``, released by the kernel if the process dies).
        """
        state = Path(state_dir)
        state.mkdir(parents=True, exist_ok=True)
        lock = _lock_state(state)
        try:
            svc = cls._open(model_dir, encoder_dir, state, db_url, data_dir, config, compaction)
        except BaseException:
            lock.close()
            raise
        svc._state_lock = lock
        return svc

    @classmethod
    def _open(
        cls, model_dir, encoder_dir, state: Path, db_url, data_dir, config: ServeConfig, compaction
    ) -> Service:
        from unlearnrec.serve.compaction import CompactionConfig, current_base_dir
        from unlearnrec.serve.retention import ID_SPACE_KEY, Fingerprints, ensure_salt
        from unlearnrec.unlearn.unlearnrec import UnlearnRec

        url = db_url or f"sqlite:///{(state / DB_FILE).resolve()}"
        store = Store.open(url)
        try:
            fps = Fingerprints(ensure_salt(store))
            store.hasher = fps.hashed
            current = current_base_dir(store, state)
            if current is not None:
                base_dir, enc_dir = current / "model", current / "encoder"
            elif model_dir is None or encoder_dir is None:
                raise ConfigError(
                    "'unlearnrec serve' needs --model, --encoder (this state has no compacted base yet)"
                )
            else:
                base_dir, enc_dir = Path(model_dir), Path(encoder_dir)
            base = TrainedModel.load(base_dir)
            if current is None and (
                len(base.forgotten_users) or len(base.forgotten_items) or base.meta.get("unlearned_from")
            ):
                raise ConfigError(
                    f"{model_dir}: the base model must be the original trained model, not an unlearned one"
                )
            method = UnlearnRec.from_encoder(enc_dir, base, finetune_epochs=0)
            ft = None
            if config.finetune_epochs > 0:
                ft = UnlearnRec.from_encoder(enc_dir, base, finetune_epochs=config.finetune_epochs)
            data = None
            if base.dataset:
                try:
                    data = base.load_dataset(data_dir)
                except UnlearnRecError as e:
                    raise ConfigError(
                        f"{e} (the service needs the model's dataset for its raw ids: pass --data-dir)"
                    ) from None
            if data is not None and len(data.val):
                # the encoder config's stopping rule and forget_guard read it, never a request
                for m in (method, ft):
                    if m is not None:
                        m.set_validation(data.val)
            fp = base.train.fingerprint()
            if current is not None:
                fp = base.meta.get("original_train_fingerprint", fp)
            owner = store.get_meta("base_fingerprint")
            if owner is None:
                store.set_meta("base_fingerprint", fp)
                store.set_meta("state_dir", str(state.resolve()))
            elif owner != fp:
                raise ConfigError(
                    f"{base_dir}: this state belongs to another base model (training-set fingerprints differ)"
                )
            recorded = store.get_meta("state_dir")
            if recorded is not None and Path(recorded) != state.resolve():
                raise ConfigError(
                    f"this database belongs to the state directory {recorded}, not {state.resolve()}"
                )
            if store.get_meta(ID_SPACE_KEY) is None:
                store.set_meta(ID_SPACE_KEY, f"{base.train.num_users},{base.train.num_items}")
            store.add_base(
                {
                    "parent": None,
                    "kind": "base",
                    "method": "train",
                    "set_fingerprint": set_fingerprint(empty_request(base.train), fps.salt),
                    "requests": 0,
                    "edges": 0,
                    "users": 0,
                    "items": 0,
                    "train_fingerprint": fp,
                    "path": str(Path(base_dir).resolve()),
                    "created_at": time.time(),
                    "seconds": None,
                    "metrics": json.dumps(base.meta.get("metrics")) if base.meta.get("metrics") else None,
                }
            )
        except BaseException:
            store.close()
            raise
        svc = cls(store, VersionStore(state), base, method, data=data, config=config, finetune_method=ft)
        svc.setup_retention(fps, compaction or CompactionConfig(), base_dir, enc_dir)
        return svc

    # ------------------------------------------------------------------------ retention (#20)
    def setup_retention(self, fps, compaction, base_dir: Path, encoder_dir: Path) -> None:
        """Fingerprints, the compactor (its tick runs on the worker thread) and the base's paths."""
        from unlearnrec.serve.compaction import Compactor

        self.fps = fps
        self.store.hasher = fps.hashed
        self.worker.salt = fps.salt
        self.base_dir = Path(base_dir)
        self.encoder_dir = Path(encoder_dir)
        self.compactor = Compactor(self, compaction, fps)
        self.worker.before_step = self.compactor.tick
        self.exclude = self._exclusion(self.base)

    def _exclusion(self, base: TrainedModel):
        """Items never recommended back to a user: those of the original training set (from the
        dataset) and of the current base (which holds the compacted new interactions)."""
        m = base.train.to_csr()
        if self.data is not None and self.data.train.same_space(base.train):
            m = m.maximum(self.data.train.to_csr())
        old = getattr(self, "exclude", None)
        if old is not None and old.shape == m.shape:
            m = m.maximum(old)
        return m.tocsr()

    def install_base(
        self, base, method, finetune_method, cum, version, kind, model, base_dir, index=None
    ) -> None:
        """Serve a compacted base (called by the compactor on the worker thread)."""
        from unlearnrec.serve.worker import Served

        with self._lock:
            self.base = base
            self.base_dir = Path(base_dir) / "model"
            self.encoder_dir = Path(base_dir) / "encoder"
            self.exclude = self._exclusion(base)
            self._user_deg = base.train.user_degrees()
            self._item_deg = base.train.item_degrees()
            w = self.worker
            w.base = base
            if index is not None:
                w.index = index
            w.method = method
            w.finetune_method = finetune_method
            w._base_emb = None
            w._cum = cum
            w._served = Served.of(version, kind, model)
        self._unblock_failed()  # rebuild the blocked sets from the database and the new base

    def start(self, worker: bool = True) -> None:
        """Recover from the database and start the writer (``worker=False``: tests step it by hand)."""
        if hasattr(self, "compactor"):
            self.compactor.recover()
        for r in self.store.with_status(("queued", *HONOURED)):
            self._block(r["kind"], json.loads(r["payload"]))
        self._block_tombstones()
        if worker:
            self.worker.start()
        else:
            self.worker.recover()

    def stop(self) -> None:
        """Stop the worker (it finishes its current step), close the database, release the state."""
        if hasattr(self, "compactor"):
            self.compactor.shutdown()  # a compaction's process ends; the restart redoes it
        self.worker.stop()
        self.close()

    def close(self) -> None:
        self.store.close()
        lock = getattr(self, "_state_lock", None)
        if lock is not None:
            lock.close()
            self._state_lock = None

    def _block_tombstones(self) -> None:
        """Users / items the current base records as forgotten (a compaction absorbed them)."""
        self._blocked_users.update(int(u) for u in self.base.forgotten_users)
        self._blocked_items.update(int(i) for i in self.base.forgotten_items)

    def _block(self, kind: str, ids: list) -> None:
        if not isinstance(ids, list):  # purged (retention): the compacted base records them
            return
        if kind == "users":
            self._blocked_users.update(int(i) for i in ids)
        elif kind == "items":
            self._blocked_items.update(int(i) for i in ids)
        else:
            ni = max(self.base.train.num_items, 1)
            self._blocked_edges.update(int(u) * ni + int(i) for u, i in ids)

    def _unblock_failed(self) -> None:
        """Rebuild the blocked sets (after a request failed: its ids may be asked again)."""
        with self._lock:
            self._blocked_users.clear()
            self._blocked_items.clear()
            self._blocked_edges.clear()
            for r in self.store.with_status(("queued", *HONOURED)):
                self._block(r["kind"], json.loads(r["payload"]))
            self._block_tombstones()

    # ------------------------------------------------------------------------ deletions
    def submit(self, body: dict[str, Any], key: str | None) -> tuple[int, dict[str, Any]]:
        """Validate and durably queue a deletion request; (HTTP status, view)."""
        if key is not None and not (1 <= len(key) <= 255 and key.isprintable()):
            raise ApiError(422, "invalid", "Idempotency-Key: must be 1 to 255 printable characters")
        given = [k for k in KINDS if body.get(k) is not None]
        if len(given) != 1:
            raise ApiError(
                422, "invalid", f"give exactly one of users, items, edges (got {', '.join(given) or 'none'})"
            )
        kind = given[0]
        digest = body_hash({kind: body[kind]})
        with self._lock:
            if key is not None:
                old = self.store.by_key(key)
                if old is not None:
                    if not self.store.same_body(old, digest):
                        raise ApiError(
                            422,
                            "idempotency_key_reused",
                            "Idempotency-Key: already used for a different request",
                        )
                    return 202, self.view(old)
            payload, size = self._validate(kind, body[kind])
            try:
                acc = self.store.insert_deletion(
                    key=key, digest=digest, kind=kind, payload=payload, size=size
                )
            except ConflictError as e:
                raise ApiError(422, "idempotency_key_reused", f"Idempotency-Key: {e}") from None
            if not acc.replayed:
                self._block(kind, payload)
        self.worker.notify()
        return 202, self.view(acc.row)

    def parse_pairs(self, values: list, field: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``[[user, item], ...]`` in raw ids -> (users, items, keys user * num_items + item) as int64
        arrays; ApiError 422 naming ``field[n]`` on a malformed pair, an id outside the id space or a
        pair given twice."""
        us, its = [], []
        for n, pair in enumerate(values):
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise ApiError(422, "invalid", f"{field}[{n}]: must be a [user, item] pair")
            u, i = self.users.lookup(pair[0]), self.items.lookup(pair[1])
            for node, raw, what in ((u, pair[0], "user"), (i, pair[1], "item")):
                if node is None:
                    raise ApiError(
                        422, "unknown_id", f"{field}[{n}]: unknown {what} id {raw!r} (outside the id space)"
                    )
            us.append(u)
            its.append(i)
        ua, ia = np.asarray(us, np.int64), np.asarray(its, np.int64)
        keys = ua * max(self.base.train.num_items, 1) + ia
        uniq, counts = np.unique(keys, return_counts=True)
        if (counts > 1).any():
            n = int(np.flatnonzero(keys == uniq[counts > 1][0])[1])
            raise ApiError(422, "duplicate", f"{field}[{n}]: the same pair is given twice")
        return ua, ia, keys

    def _validate(self, kind: str, values: Any) -> tuple[list, int]:
        """Internal ids and edge count of a request, or the ApiError naming the field."""
        cfg = self.config
        if not isinstance(values, list):
            raise ApiError(422, "invalid", f"{kind}: must be a list")
        if len(values) == 0:
            raise ApiError(422, "empty", f"{kind}: empty list: nothing to forget")
        if len(values) > cfg.max_ids:
            raise ApiError(
                413, "too_large", f"{kind}: {len(values)} entries, more than the limit {cfg.max_ids}"
            )
        if kind in ("users", "items"):
            idmap = self.users if kind == "users" else self.items
            blocked = self._blocked_users if kind == "users" else self._blocked_items
            ids = []
            for n, raw in enumerate(values):
                i = idmap.lookup(raw)
                if i is None:
                    raise ApiError(422, "unknown_id", f"{kind}[{n}]: unknown {idmap.what} id {raw!r}")
                ids.append(i)
            arr = np.asarray(ids, np.int64)
            uniq, counts = np.unique(arr, return_counts=True)
            if (counts > 1).any():
                raise ApiError(
                    422,
                    "duplicate",
                    f"{kind}: {idmap.what} {idmap.to_raw(int(uniq[counts > 1][0]))!r} given twice",
                )
            for n, i in enumerate(ids):
                if i in blocked:
                    raise ApiError(
                        409,
                        "already_forgotten",
                        f"{kind}[{n}]: {idmap.what} {values[n]!r} is already forgotten or queued",
                    )
            deg = self._user_deg if kind == "users" else self._item_deg
            size = int(deg[arr].sum())
            if size > cfg.max_request_edges:
                raise ApiError(
                    413,
                    "too_large",
                    f"{kind}: these {len(ids)} {idmap.what}s have {size} interactions, "
                    f"more than the limit {cfg.max_request_edges}",
                )
            return sorted(ids), size
        # edges: [[user, item], ...]
        ua, ia, keys = self.parse_pairs(values, "edges")
        us, its = ua.tolist(), ia.tolist()
        inside = self.base.train.contains(ua, ia)
        if not inside.all():
            n = int(np.flatnonzero(~inside)[0])
            raise ApiError(
                422,
                "not_in_training_set",
                f"edges[{n}]: {list(values[n])!r} is not in the model's training set",
            )
        for n in range(len(us)):
            if us[n] in self._blocked_users:
                why = f"its user {values[n][0]!r} is already forgotten or queued for forgetting"
            elif its[n] in self._blocked_items:
                why = f"its item {values[n][1]!r} is already forgotten or queued for forgetting"
            elif int(keys[n]) in self._blocked_edges:
                why = "it is already forgotten or queued for forgetting"
            else:
                continue
            raise ApiError(409, "already_forgotten", f"edges[{n}]: {list(values[n])!r}: {why}")
        if len(us) > cfg.max_request_edges:
            raise ApiError(
                413, "too_large", f"edges: {len(us)} edges, more than the limit {cfg.max_request_edges}"
            )
        order = np.argsort(keys)
        return [[int(ua[k]), int(ia[k])] for k in order], len(us)

    def effective_status(self, row: dict[str, Any]) -> str:
        """The status a client may rely on: 'applied' only once the served model honours it."""
        s = row["status"]
        served = self.worker._served
        cur = served.version if served is not None else -1
        if s in HONOURED and (row["version"] is None or row["version"] > cur):
            return "queued"
        if s == "finetuned" and (row["finetuned_version"] or 0) > cur:
            return "applied"
        return s

    def view(self, row: dict[str, Any], detail: bool = True) -> dict[str, Any]:
        status = self.effective_status(row)
        out: dict[str, Any] = {
            "id": int(row["id"]),
            "status": status,
            "kind": row["kind"],
            "size": int(row["size"]),
            "accepted_at": _iso(row["accepted_at"]),
        }
        if status in HONOURED:
            out.update(
                version=row["version"],
                applied_at=_iso(row["applied_at"]),
                latency_s=round(float(row["applied_at"]) - float(row["accepted_at"]), 6),
            )
            if status == "finetuned":
                out["finetuned_version"] = row["finetuned_version"]
        if status == "failed":
            out["reason"] = row["reason"]
        if detail and status in HONOURED:
            out["verification"] = json.loads(row["verification"]) if row["verification"] else None
            entry = self.store.ledger_entry_of(int(row["id"]))
            out["ledger"] = {"seq": entry["seq"], "hash": entry["hash"]} if entry else None
        return out

    def get_deletion(self, deletion_id: int) -> dict[str, Any]:
        row = self.store.get(deletion_id)
        if row is None:
            raise ApiError(404, "not_found", f"no deletion request {deletion_id}")
        return self.view(row)

    def list_deletions(self, status: str | None, cursor: str | None, limit: int) -> dict[str, Any]:
        if status is not None and status not in STATUSES:
            raise ApiError(422, "invalid", f"status: must be one of {', '.join(STATUSES)}")
        after = _cursor(cursor)
        limit = min(limit, self.config.page_limit)
        rows = self.store.list_deletions(status, after, limit)
        return {
            "items": [self.view(r, detail=False) for r in rows],
            "next_cursor": str(rows[-1]["id"]) if len(rows) == limit else None,
        }

    # ------------------------------------------------------------------------ reads
    def recommendations(self, raw_user: str, k: int) -> dict[str, Any]:
        if not 1 <= k <= self.config.max_k:
            raise ApiError(422, "invalid", f"k: must be between 1 and {self.config.max_k}")
        u = self.users.lookup(raw_user)
        if u is None:
            raise ApiError(404, "unknown_id", f"user_id: unknown user id {raw_user}")
        served = self.worker.served
        if u in served.forgotten_users:
            raise ApiError(410, "forgotten", f"user {raw_user} has been forgotten: no recommendations")
        items, scores = served.recommend(u, k, self.exclude)
        out = []
        for i, s in zip(items.tolist(), scores.tolist(), strict=True):
            raw = self.items.to_raw(i)
            e = {"id": raw, "score": round(float(s), 6)}
            t = self.titles.get(str(raw))
            if t is not None:
                e["title"] = t
            out.append(e)
        return {"user": self.users.to_raw(u), "version": served.version, "items": out}

    def models(self) -> dict[str, Any]:
        served = self.worker._served
        out = []
        for v in self.store.versions():
            v = dict(v)
            v["created_at"] = _iso(v["created_at"])
            v["metrics"] = json.loads(v["metrics"]) if v["metrics"] else None
            v["path"] = Path(v["path"]).name if v["version"] else v["path"]
            out.append(v)
        return {"current": served.version if served else None, "method": METHOD, "versions": out}

    def ledger(self, cursor: str | None, limit: int) -> dict[str, Any]:
        after = _cursor(cursor)
        limit = min(limit, self.config.page_limit)
        entries = self.store.ledger_entries(after, limit)
        return {"entries": entries, "next_cursor": str(entries[-1]["seq"]) if len(entries) == limit else None}

    def ready(self) -> tuple[bool, dict[str, Any]]:
        served = self.worker._served
        checks = {
            "model": served is not None,
            "worker": self.worker.ready,
            "database": self.store.ping(),
        }
        return all(checks.values()), {
            "ready": all(checks.values()),
            "checks": checks,
            "version": served.version if served else None,
            "worker_error": self.worker.last_error,
        }


def _lock_state(state: Path):
    import fcntl

    f = open(state / "service.lock", "a+")  # noqa: SIM115 - held for the service's lifetime
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise ConfigError(f"{state}: another 'unlearnrec serve' is running on this state directory") from None
    return f


def _cursor(cursor: str | None) -> int:
    if cursor is None or cursor == "":
        return 0
    try:
        n = int(cursor)
    except ValueError:
        n = -1
    if n < 0:
        raise ApiError(422, "invalid", f"cursor: not a cursor from this listing: {cursor!r}")
    return n
