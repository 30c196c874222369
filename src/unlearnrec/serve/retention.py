# long file: salted fingerprints, the forgotten set (ordered against readmissions) and the purge; issue 20
"""Retention: salted fingerprints of what was forgotten, and the purge after a compaction.

Forgetting in the served embeddings is half of an erasure: the base model, its encoder, older
versions, cached splits and the request records themselves still hold the forgotten interactions
until a compaction (``compaction.py``) retrains the base without them. Then :func:`purge` deletes
every artefact trained on or holding the forgotten data and replaces the raw ids in the database
by *salted fingerprints*:

* a per-deployment random salt (``service_meta.fingerprint_salt``, 32 bytes) keys BLAKE2b;
* an edge's fingerprint is ``blake2b(key=salt, "e:<user>:<item>")``, a user's ``"u:<user>"``, an
  item's ``"i:<item>"`` (internal ids), 128 bits, hex;
* the fingerprints go to the ``forgotten`` table; the request rows keep their status, times,
  verification and ledger entry, but their payload becomes ``{"purged_in": <compaction>}`` and
  their idempotency key and body hash are replaced by salted hashes (``h:...``) that still let a
  retried request find its row.

With the salt, membership of a *given* (user, item) pair can be tested (that is how the service
keeps a forgotten user forgotten and how ``unlearnrec serve audit`` finds leftovers); without it a
dump of the database reveals nothing. The salt does not stop someone who holds it from testing
every pair of a small id space: it protects a database dump, not a compromised service.

Ledger entries are written with salted fingerprints from the start (the worker's
``request_fingerprint`` / ``set_fingerprint`` / ``model_fingerprint``), so the purge never rewrites
an entry and the hash chain verifies before and after it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import delete, insert, select, text, update

from unlearnrec.serve.store import (
    HONOURED,
    Store,
    _write,
    deletions,
    forgotten,
    new_interactions,
    readmissions,
    versions,
)

log = logging.getLogger(__name__)

SALT_KEY = "fingerprint_salt"
ID_SPACE_KEY = "id_space"
PURGED = "purged_in"  # the key of a purged payload
HASHED = "h:"  # prefix of a salted hash that replaced a raw value

# folders of the state directory (besides versions/ and the database)
BASES = "bases"  # bases/cNNNNNN/{model,encoder}: compacted bases
JOBS = "compactions"  # compactions/cNNNNNN/: a compaction's input and log (deleted by the purge)
TMP = "tmp"  # temporary files
CACHE = "cache"  # cached datasets / splits
LOGS = "logs"  # log files (redacted by the purge)


def ensure_salt(store: Store) -> bytes:
    """The deployment's fingerprint salt, created (random, 32 bytes) on first use."""
    hexsalt = store.get_meta(SALT_KEY)
    if hexsalt is None:
        store.set_meta(SALT_KEY, secrets.token_hex(32))
        hexsalt = store.get_meta(SALT_KEY)
    return bytes.fromhex(hexsalt)


class Fingerprints:
    """Salted fingerprints of edges, users, items and strings (see the module docstring)."""

    def __init__(self, salt: bytes):
        if len(salt) < 16:
            raise ValueError("the fingerprint salt must have at least 16 bytes")
        self.salt = bytes(salt[:64])

    def _h(self, msg: str) -> str:
        return hashlib.blake2b(msg.encode(), key=self.salt, digest_size=16).hexdigest()

    def edge(self, user: int, item: int) -> str:
        return self._h(f"e:{int(user)}:{int(item)}")

    def user(self, user: int) -> str:
        return self._h(f"u:{int(user)}")

    def item(self, item: int) -> str:
        return self._h(f"i:{int(item)}")

    def edges(self, users: Iterable[int], items: Iterable[int]) -> list[str]:
        return [self.edge(u, i) for u, i in zip(users, items, strict=True)]

    def hashed(self, value: str) -> str:
        """A salted stand-in for a raw string (an idempotency key, a body hash): 64 characters."""
        return HASHED + hashlib.blake2b(value.encode(), key=self.salt, digest_size=31).hexdigest()

    def request(self, edges_fp: str, users: Iterable[int], items: Iterable[int]) -> str:
        """A salted fingerprint of a request (its edges' fingerprint and erased nodes)."""
        u = ",".join(str(int(x)) for x in sorted(users))
        i = ",".join(str(int(x)) for x in sorted(items))
        return hashlib.blake2b(f"r:{edges_fp}|{u}|{i}".encode(), key=self.salt, digest_size=32).hexdigest()


def is_purged(payload: Any) -> bool:
    return isinstance(payload, dict) and PURGED in payload


@dataclass
class ForgottenSet:
    """What has been forgotten, as fingerprints (purged requests) and raw ids (not yet purged).

    ``edges`` / ``users`` / ``items``: fingerprint sets (readmitted users/items removed);
    ``raw_rows``: ids of honoured requests whose payload still holds raw ids.
    """

    fps: Fingerprints
    edges: set[str] = field(default_factory=set)
    users: set[str] = field(default_factory=set)
    items: set[str] = field(default_factory=set)
    raw_rows: list[int] = field(default_factory=list)
    requests: int = 0

    def __len__(self) -> int:
        return len(self.edges) + len(self.users) + len(self.items)

    def user_mask(self, n: int) -> np.ndarray:
        """(n,) bool: which of users 0..n-1 are forgotten."""
        return np.fromiter((self.fps.user(u) in self.users for u in range(n)), bool, n)

    def item_mask(self, n: int) -> np.ndarray:
        return np.fromiter((self.fps.item(i) in self.items for i in range(n)), bool, n)

    def hits(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """(n,) bool: which (user, item) pairs hold forgotten data (a forgotten edge, or any
        interaction of a forgotten user or item)."""
        users = np.asarray(users, np.int64).ravel()
        items = np.asarray(items, np.int64).ravel()
        out = np.zeros(len(users), bool)
        if not len(users):
            return out
        if self.users:
            uu, inv = np.unique(users, return_inverse=True)
            out |= np.fromiter((self.fps.user(u) in self.users for u in uu.tolist()), bool, len(uu))[inv]
        if self.items:
            ii, inv = np.unique(items, return_inverse=True)
            out |= np.fromiter((self.fps.item(i) in self.items for i in ii.tolist()), bool, len(ii))[inv]
        if self.edges:
            es = self.edges
            fp = self.fps.edge
            out |= np.fromiter(
                (fp(u, i) in es for u, i in zip(users.tolist(), items.tolist(), strict=True)),
                bool,
                len(users),
            )
        return out


def forget_marks(
    store: Store, fps: Fingerprints, statuses: tuple[str, ...] = HONOURED
) -> dict[str, dict[str, int]]:
    """For forgotten users and items: fingerprint -> the largest id of a request that forgot it
    (purged requests from ``forgotten``, the others from their payloads, of ``statuses``)."""
    out: dict[str, dict[str, int]] = {"user": {}, "item": {}}

    def mark(kind: str, fp: str, rid: int) -> None:
        d = out[kind]
        d[fp] = max(d.get(fp, -1), int(rid))

    with store.engine.connect() as c:
        for kind, fp, rid in c.execute(
            select(forgotten.c.kind, forgotten.c.fp, forgotten.c.deletion_id).where(
                forgotten.c.kind.in_(("user", "item"))
            )
        ):
            mark(kind, fp, rid or 0)
        rows = c.execute(
            select(deletions.c.id, deletions.c.kind, deletions.c.payload).where(
                deletions.c.status.in_(statuses), deletions.c.kind.in_(("users", "items"))
            )
        )
        for rid, kind, payload in rows:
            ids = json.loads(payload)
            if is_purged(ids):
                continue
            for x in ids:
                mark(kind[:-1], fps.user(x) if kind == "users" else fps.item(x), rid)
    return out


def readmit_marks(store: Store) -> dict[str, dict[str, int]]:
    """For readmitted users and items: fingerprint -> the deletion id the readmission follows."""
    out: dict[str, dict[str, int]] = {"user": {}, "item": {}}
    with store.engine.connect() as c:
        for kind, fp, after in c.execute(
            select(readmissions.c.kind, readmissions.c.fp, readmissions.c.after_deletion)
        ):
            out[kind][fp] = max(out[kind].get(fp, -1), int(after))
    return out


def still_forgotten(kind: str, fp: str, forgets: dict, readmits: dict) -> bool:
    """Forgotten by a request newer than its last readmission (if any)."""
    return forgets[kind].get(fp, -1) > readmits[kind].get(fp, -1)


def forgotten_set(store: Store, fps: Fingerprints) -> ForgottenSet:
    """Everything the database says was forgotten (applied requests, purged or not); a user or
    item readmitted after the last request that forgot it is not."""
    out = ForgottenSet(fps)
    forgets = forget_marks(store, fps)
    readmits = readmit_marks(store)
    with store.engine.connect() as c:
        for fp in c.execute(select(forgotten.c.fp).where(forgotten.c.kind == "edge")).scalars():
            out.edges.add(fp)
        rows = list(
            c.execute(
                select(deletions.c.id, deletions.c.kind, deletions.c.payload).where(
                    deletions.c.status.in_(HONOURED)
                )
            )
        )
    out.requests = len(rows)
    for rid, kind, payload in rows:
        ids = json.loads(payload)
        if is_purged(ids):
            continue
        out.raw_rows.append(int(rid))
        if kind == "edges":
            out.edges.update(fps.edge(u, i) for u, i in ids)
    for kind, target in (("user", out.users), ("item", out.items)):
        target.update(fp for fp in forgets[kind] if still_forgotten(kind, fp, forgets, readmits))
    return out


# ---------------------------------------------------------------------------- purge
def _rm(path: Path, removed: list[str]) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)
    else:
        return
    removed.append(str(path))


def _fsync_dir(path: Path) -> None:
    if path.is_dir():
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def purge(
    store: Store,
    state_dir: str | os.PathLike,
    compaction_id: int,
    fps: Fingerprints,
    keep_base: Path,
    keep_versions: set[int],
) -> dict[str, Any]:
    """Delete everything that holds data the compaction ``compaction_id`` removed (its absorbed
    requests' raw ids, superseded bases, encoders and versions, the compaction's input, cached
    splits, temporary files) and redact the logs. Idempotent; returns what it removed.

    Must run only after the compaction's install committed (the new base is served). The caller
    marks the compaction ``purged`` afterwards.
    ``keep_base``: the new base's directory; ``keep_versions``: version numbers still live
    (the new base and what derives from it).
    """
    state = Path(state_dir)
    removed: list[str] = []
    t0 = time.perf_counter()
    # 1. files: old versions, old bases, compaction inputs, caches, temporary files
    vroot = state / "versions"
    if vroot.is_dir():
        for p in sorted(vroot.iterdir()):
            n = p.name
            if n.startswith("."):
                _rm(p, removed)
            elif n.startswith("v") and n[1:].isdigit() and int(n[1:]) not in keep_versions:
                _rm(p, removed)
        _fsync_dir(vroot)
    broot = state / BASES
    if broot.is_dir():
        for p in sorted(broot.iterdir()):
            if p.resolve() != keep_base.resolve():
                _rm(p, removed)
        _fsync_dir(broot)
    for name in (JOBS, TMP, CACHE):
        d = state / name
        if d.is_dir():
            for p in sorted(d.iterdir()):
                _rm(p, removed)
            _fsync_dir(d)
    # 2. the database: raw ids of absorbed requests -> salted fingerprints (one transaction)
    absorbed = _purge_rows(store, compaction_id, fps, keep_versions)
    # 3. the logs: lines that name a forgotten pair are dropped
    from unlearnrec.serve.scan import redact_logs

    redacted = redact_logs(state / LOGS, forgotten_set(store, fps), _id_space(store))
    # 4. the database files themselves keep old page images until they are rewritten
    _compact_database(store)
    report = {
        "removed": [os.path.relpath(r, state) for r in removed],
        "requests": absorbed,
        "redacted_log_lines": redacted,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    log.info(
        "purge after compaction %d: %d paths removed, %d requests reduced to fingerprints, "
        "%d log lines redacted",
        compaction_id,
        len(removed),
        absorbed,
        redacted,
    )
    return report


def _id_space(store: Store) -> tuple[int, int] | None:
    v = store.get_meta(ID_SPACE_KEY)
    if not v:
        return None
    u, i = v.split(",")
    return int(u), int(i)


def _purge_rows(store: Store, compaction_id: int, fps: Fingerprints, keep_versions: set[int]) -> int:
    """Absorbed requests' payloads -> fingerprints in ``forgotten``; absorbed new interactions
    deleted (they are in the new base, or were forgotten)."""
    with _write(store.engine) as c:
        rows = list(
            c.execute(
                select(deletions).where(
                    deletions.c.compaction == compaction_id, deletions.c.status.in_(HONOURED)
                )
            )
        )
        n = 0
        for r in rows:
            ids = json.loads(r.payload)
            if is_purged(ids):
                continue
            n += 1
            if r.kind == "users":
                recs = [("user", fps.user(u)) for u in ids]
            elif r.kind == "items":
                recs = [("item", fps.item(i)) for i in ids]
            else:
                recs = [("edge", fps.edge(u, i)) for u, i in ids]
            if recs:
                c.execute(
                    insert(forgotten),
                    [
                        {"kind": k, "fp": f, "deletion_id": int(r.id), "compaction": compaction_id}
                        for k, f in recs
                    ],
                )
            values: dict[str, Any] = {"payload": json.dumps({PURGED: compaction_id})}
            if not str(r.body_hash).startswith(HASHED):
                values["body_hash"] = fps.hashed(r.body_hash)
            if r.idempotency_key is not None and not str(r.idempotency_key).startswith(HASHED):
                values["idempotency_key"] = fps.hashed(r.idempotency_key)
            c.execute(update(deletions).where(deletions.c.id == r.id).values(**values))
        c.execute(delete(new_interactions).where(new_interactions.c.compaction == compaction_id))
        # superseded versions' training-set fingerprints (unsalted; with the original data they
        # would tell which edges were removed) -> salted
        for v, tfp in c.execute(select(versions.c.version, versions.c.train_fingerprint)).fetchall():
            if int(v) not in keep_versions and int(v) != 0 and not str(tfp).startswith(HASHED):
                c.execute(
                    update(versions).where(versions.c.version == v).values(train_fingerprint=fps.hashed(tfp))
                )
    return n


def _compact_database(store: Store) -> None:
    """Rewrite the database files so that deleted values do not linger in free pages / the WAL."""
    eng = store.engine
    try:
        if eng.dialect.name == "sqlite":
            with eng.connect() as c:
                c.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            raw = eng.raw_connection()
            try:
                cur = raw.cursor()
                cur.execute("VACUUM")
                cur.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                cur.close()
            finally:
                raw.close()
        elif eng.dialect.name == "postgresql":
            with eng.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
                for t in ("deletions", "new_interactions"):
                    c.execute(text(f"VACUUM {t}"))
    except Exception as e:  # a busy database: the values are gone from the tables; log it
        log.warning("could not compact the database files after the purge: %s", e)
