# long file: one schema and one state machine for both database back-ends (SQLite, PostgreSQL); issue 19
"""The service's database: SQLAlchemy 2 Core tables and the request state machine.

One storage layer for both back-ends: the embedded default (SQLite in the state directory, WAL,
``synchronous=FULL``) and PostgreSQL (``postgresql+psycopg://...``). The schema carries its own
version (table ``service_meta``, key ``schema_version``), checked when the store is opened: an
older or newer database is refused with one clear line, never silently reused.

Request state machine (docs/service.md)::

    (POST, validated) --> queued --+--> applied --> finetuned
                                   +--> failed (with its reason)

Every transition is a guarded ``UPDATE ... WHERE status = <from>`` that must touch exactly the
rows it names, so a request can never be applied twice. A version's publication (the version
row, its requests marked ``applied`` and their ledger entries) commits in ONE transaction: the
transactional outbox. Times are UTC seconds since the epoch (floats), portable across back-ends.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    func,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from unlearnrec.errors import UnlearnRecError
from unlearnrec.unlearn.ledger import GENESIS, check_chain, entry_hash

SCHEMA_VERSION = 1

STATUSES = ("queued", "applied", "finetuned", "failed")
# the request state machine: from -> allowed next states
TRANSITIONS: dict[str, frozenset[str]] = {
    "queued": frozenset({"applied", "failed"}),
    "applied": frozenset({"finetuned"}),
    "finetuned": frozenset(),
    "failed": frozenset(),
}
# statuses of requests the current model honours (their edges/nodes are gone)
HONOURED = ("applied", "finetuned")

metadata = MetaData()

service_meta = Table(
    "service_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

deletions = Table(
    "deletions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("idempotency_key", String(255), unique=True, nullable=True),
    Column("body_hash", String(64), nullable=False),
    Column("kind", String(8), nullable=False),  # edges | users | items
    Column("payload", Text, nullable=False),  # JSON: internal ids ([[u, i], ...] or [id, ...])
    Column("size", Integer, nullable=False),  # edges the request removes (at acceptance)
    Column("status", String(16), nullable=False),
    Column("reason", Text, nullable=True),
    Column("version", Integer, nullable=True),  # the first model version honouring it
    Column("finetuned_version", Integer, nullable=True),
    Column("accepted_at", Float, nullable=False),
    Column("applied_at", Float, nullable=True),
    Column("verification", Text, nullable=True),  # JSON, written after the version is served
    # retention (issue #20): the compaction whose retrained base absorbs this request
    Column("compaction", Integer, nullable=True),
)
Index("ix_deletions_status_id", deletions.c.status, deletions.c.id)

versions = Table(
    "versions",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("parent", Integer, nullable=True),
    Column("kind", String(16), nullable=False),  # base | ours0 | finetune
    Column("method", String(64), nullable=False),
    Column("set_fingerprint", String(64), nullable=False),  # of the cumulative request set
    Column("requests", Integer, nullable=False),  # requests honoured (cumulative)
    Column("edges", Integer, nullable=False),  # edges forgotten (cumulative)
    Column("users", Integer, nullable=False),
    Column("items", Integer, nullable=False),
    Column("train_fingerprint", String(64), nullable=False),
    Column("path", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("seconds", Float, nullable=True),  # the forgetting step itself
    Column("metrics", Text, nullable=True),  # JSON, filled when computed
)

ledger = Table(
    "ledger",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("deletion_id", Integer, ForeignKey("deletions.id"), unique=True, nullable=False),
    Column("entry", Text, nullable=False),  # the full JSON entry (hash-chained)
    Column("hash", String(64), nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", String(32), primary_key=True),
    Column("salt", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Column("role", String(16), nullable=False),
    Column("label", Text, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float, nullable=True),
)


# ---------------------------------------------------------------------------- retention (issue #20)
# salted fingerprints of forgotten edges / users / items, written when a compaction purges the
# raw ids of the requests it absorbed (serve/retention.py)
forgotten = Table(
    "forgotten",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(8), nullable=False),  # edge | user | item
    Column("fp", String(64), nullable=False),
    Column("deletion_id", Integer, nullable=True),
    Column("compaction", Integer, nullable=True),
)
Index("ix_forgotten_fp", forgotten.c.fp)

# users / items an admin allowed back after they were forgotten (fingerprints only)
readmissions = Table(
    "readmissions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(8), nullable=False),  # user | item
    Column("fp", String(64), nullable=False),
    Column("at", Float, nullable=False),
    # the largest deletion id when it was readmitted: a request forgetting it again is newer
    Column("after_deletion", Integer, nullable=False),
    Column("note", Text, nullable=True),
)

# interactions added over the API, effective at the next compaction (internal ids)
new_interactions = Table(
    "new_interactions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("user", Integer, nullable=False),
    Column("item", Integer, nullable=False),
    Column("added_at", Float, nullable=False),
    Column("compaction", Integer, nullable=True),
    UniqueConstraint("user", "item", name="uq_new_interactions_edge"),
)

compactions = Table(
    "compactions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    # requested -> running -> trained -> done -> purged | failed | abandoned
    Column("status", String(16), nullable=False),
    Column("trigger", String(16), nullable=False),  # manual | schedule | interval | restart
    Column("requested_at", Float, nullable=False),
    Column("started_at", Float, nullable=True),
    Column("finished_at", Float, nullable=True),
    Column("installed_at", Float, nullable=True),
    Column("purged_at", Float, nullable=True),
    Column("pid", Integer, nullable=True),
    Column("from_version", Integer, nullable=True),  # the version served when it started
    Column("base_version", Integer, nullable=True),  # the retrained base's version number
    Column("served_version", Integer, nullable=True),  # what was served after install
    Column("requests", Integer, nullable=True),  # deletion requests absorbed
    Column("interactions", Integer, nullable=True),  # new interactions absorbed
    Column("train_edges", Integer, nullable=True),
    Column("reapplied", Integer, nullable=True),  # requests re-applied on the new base
    Column("error", Text, nullable=True),
    Column("report", Text, nullable=True),  # JSON: timings, metrics, what the purge removed
)


class StoreError(UnlearnRecError):
    """The database is unusable (wrong schema version, foreign state) or a transition is illegal."""


class ConflictError(StoreError):
    """A guarded transition touched fewer rows than it named (someone else moved them)."""


@dataclass(frozen=True)
class Accepted:
    """What ``insert_deletion`` did: the row, and whether it already existed (same key)."""

    row: dict[str, Any]
    replayed: bool


def body_hash(body: Any) -> str:
    """sha256 of a request body's canonical JSON (detects an Idempotency-Key reused for another body)."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL + synchronous=FULL on every connection."""
    if url.startswith("sqlite"):
        eng = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10})
        event.listen(eng, "connect", _sqlite_pragmas)

        # pysqlite defers BEGIN until the first write; take over (SQLAlchemy's documented recipe)
        # so that a write transaction holds the write lock from its first statement (BEGIN
        # IMMEDIATE: no lock upgrade can fail half-way) while reads stay concurrent (WAL)
        @event.listens_for(eng, "connect")
        def _no_autobegin(dbapi_conn, _rec):
            dbapi_conn.isolation_level = None

        @event.listens_for(eng, "begin")
        def _begin(conn):
            immediate = conn.get_execution_options().get("unlearnrec_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return eng
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


@contextmanager
def _write(engine: Engine) -> Iterator[Connection]:
    """A write transaction (BEGIN IMMEDIATE on SQLite), committed on success, rolled back on error."""
    with engine.connect() as c:
        c.execution_options(unlearnrec_write=True)
        with c.begin():
            yield c


def _row(r) -> dict[str, Any] | None:
    return None if r is None else dict(r._mapping)


class Store:
    """The service's tables on one database URL. Thread-safe (one engine, pooled connections)."""

    def __init__(self, url: str, engine: Engine | None = None):
        self.url = url
        self.engine = engine or make_engine(url)
        # retention (issue #20): a purge replaces the idempotency key and body hash of absorbed
        # requests by salted hashes; ``hasher`` (set by the service) finds them again
        self.hasher: Any = None

    # ------------------------------------------------------------------------ lifecycle
    @classmethod
    def open(cls, url: str, create: bool = True) -> Store:
        """Open (and on first use create) the schema at ``url``; refuse another schema version."""
        store = cls(url)
        try:
            names = set(inspect(store.engine).get_table_names())
        except Exception as e:  # an unreachable server, a bad URL: one clear line
            raise StoreError(
                f"cannot open the database {safe_url(url)}: {e.__class__.__name__}: {e}"
            ) from None
        if "service_meta" not in names:
            if names & {t.name for t in metadata.sorted_tables}:
                raise StoreError(f"{safe_url(url)}: has service tables but no schema version; refusing")
            if not create:
                raise StoreError(
                    f"{safe_url(url)}: no service database here (start 'unlearnrec serve' first)"
                )
            metadata.create_all(store.engine)
            with store.engine.begin() as c:
                c.execute(insert(service_meta).values(key="schema_version", value=str(SCHEMA_VERSION)))
        else:
            metadata.create_all(store.engine)  # no-op for existing tables
        found = store.get_meta("schema_version")
        if found != str(SCHEMA_VERSION):
            raise StoreError(
                f"{safe_url(url)}: schema version {found}, this unlearnrec needs {SCHEMA_VERSION} "
                "(no migration exists between them)"
            )
        return store

    def close(self) -> None:
        self.engine.dispose()

    def ping(self) -> bool:
        try:
            with self.engine.connect() as c:
                c.execute(select(1))
            return True
        except Exception:
            return False

    def get_meta(self, key: str) -> str | None:
        with self.engine.connect() as c:
            return c.execute(select(service_meta.c.value).where(service_meta.c.key == key)).scalar()

    def set_meta(self, key: str, value: str) -> None:
        with _write(self.engine) as c:
            if c.execute(select(service_meta.c.key).where(service_meta.c.key == key)).first():
                c.execute(update(service_meta).where(service_meta.c.key == key).values(value=value))
            else:
                c.execute(insert(service_meta).values(key=key, value=value))

    # ------------------------------------------------------------------------ deletions
    def insert_deletion(
        self,
        *,
        key: str | None,
        digest: str,
        kind: str,
        payload: Any,
        size: int,
        now: float | None = None,
    ) -> Accepted:
        """Commit a new ``queued`` request, or return the one already stored under ``key``.

        The row is durable when this returns (the caller acknowledges only then). A key reused
        with another body is a :class:`ConflictError` (the caller answers 422).
        """
        if key is not None:
            old = self.by_key(key)
            if old is not None:
                return self._replay(old, digest)
        values = dict(
            idempotency_key=key,
            body_hash=digest,
            kind=kind,
            payload=json.dumps(payload, separators=(",", ":")),
            size=int(size),
            status="queued",
            accepted_at=time.time() if now is None else now,
        )
        try:
            with _write(self.engine) as c:
                new_id = c.execute(insert(deletions).values(**values)).inserted_primary_key[0]
        except IntegrityError:
            old = self.by_key(key) if key is not None else None
            if old is None:
                raise
            return self._replay(old, digest)
        return Accepted(self.get(int(new_id)), False)

    def same_body(self, row: dict[str, Any], digest: str) -> bool:
        """Whether ``row`` was accepted for a body of hash ``digest`` (raw or, after a purge, salted)."""
        h = row["body_hash"]
        return h == digest or (self.hasher is not None and h == self.hasher(digest))

    def _replay(self, old: dict[str, Any], digest: str) -> Accepted:
        if not self.same_body(old, digest):
            raise ConflictError("Idempotency-Key was already used for a different request body")
        return Accepted(old, True)

    def by_key(self, key: str) -> dict[str, Any] | None:
        keys = [key] if self.hasher is None else [key, self.hasher(key)]
        with self.engine.connect() as c:
            return _row(c.execute(select(deletions).where(deletions.c.idempotency_key.in_(keys))).first())

    def get(self, deletion_id: int) -> dict[str, Any] | None:
        with self.engine.connect() as c:
            return _row(c.execute(select(deletions).where(deletions.c.id == deletion_id)).first())

    def list_deletions(
        self, status: str | None = None, after: int = 0, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Requests with ``id > after`` in id order (cursor paging), optionally of one status."""
        q = select(deletions).where(deletions.c.id > after)
        if status is not None:
            q = q.where(deletions.c.status == status)
        q = q.order_by(deletions.c.id).limit(limit)
        with self.engine.connect() as c:
            return [dict(r._mapping) for r in c.execute(q)]

    def queued(self, limit: int) -> list[dict[str, Any]]:
        """The oldest ``limit`` queued requests, in the order they were accepted."""
        return self.list_deletions("queued", 0, limit)

    def with_status(self, statuses: Iterable[str]) -> list[dict[str, Any]]:
        q = select(deletions).where(deletions.c.status.in_(list(statuses))).order_by(deletions.c.id)
        with self.engine.connect() as c:
            return [dict(r._mapping) for r in c.execute(q)]

    def counts(self) -> dict[str, int]:
        """Requests per status (every status present, zero when none)."""
        q = select(deletions.c.status, func.count()).group_by(deletions.c.status)
        out = dict.fromkeys(STATUSES, 0)
        with self.engine.connect() as c:
            for s, n in c.execute(q):
                out[s] = int(n)
        return out

    def _transition(self, c, ids: Sequence[int], old: str, new: str, **values: Any) -> None:
        if new not in TRANSITIONS[old]:
            raise StoreError(f"illegal transition {old} -> {new}")
        if not ids:
            return
        n = c.execute(
            update(deletions)
            .where(deletions.c.id.in_(list(ids)), deletions.c.status == old)
            .values(status=new, **values)
        ).rowcount
        if n != len(ids):
            raise ConflictError(f"{len(ids) - n} of {len(ids)} requests were not {old!r}; nothing changed")

    def mark_failed(self, deletion_id: int, reason: str) -> None:
        with _write(self.engine) as c:
            self._transition(c, [deletion_id], "queued", "failed", reason=reason[:2000])

    def set_verification(self, results: dict[int, dict[str, Any]]) -> None:
        if not results:
            return
        with _write(self.engine) as c:
            for i, v in results.items():
                c.execute(update(deletions).where(deletions.c.id == i).values(verification=json.dumps(v)))

    # ------------------------------------------------------------------------ versions
    def add_base(self, row: dict[str, Any]) -> None:
        """Record version 0 (the base model) once."""
        with _write(self.engine) as c:
            if c.execute(select(versions.c.version).where(versions.c.version == 0)).first() is None:
                c.execute(insert(versions).values(version=0, **row))

    def publish(
        self,
        version_row: dict[str, Any],
        applied: Sequence[dict[str, Any]],
        entries: Sequence[dict[str, Any]],
        now: float | None = None,
    ) -> list[dict[str, Any]]:
        """In ONE transaction: insert the version row, move ``applied`` requests queued -> applied
        (version = this one), and append one hash-chained ledger entry per request (``entries``:
        the records, without seq/time/prev/hash, in the order of ``applied``). Returns the entries
        as stored. Any failure rolls all of it back."""
        now = time.time() if now is None else now
        ids = [int(r["id"]) for r in applied]
        out = []
        with _write(self.engine) as c:
            c.execute(insert(versions).values(**version_row))
            self._transition(c, ids, "queued", "applied", version=version_row["version"], applied_at=now)
            last = c.execute(
                select(ledger.c.seq, ledger.c.hash).order_by(ledger.c.seq.desc()).limit(1)
            ).first()
            seq, prev = (int(last[0]), last[1]) if last else (0, GENESIS)
            stamp = datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="milliseconds")
            rows = []
            for rid, rec in zip(ids, entries, strict=True):
                seq += 1
                entry = {"seq": seq, "time": stamp, "deletion_id": rid, **rec, "prev": prev}
                entry["hash"] = prev = entry_hash(entry)
                rows.append(
                    {"seq": seq, "deletion_id": rid, "entry": json.dumps(entry), "hash": entry["hash"]}
                )
                out.append(entry)
            if rows:
                c.execute(insert(ledger), rows)
        return out

    def publish_finetuned(self, version_row: dict[str, Any], ids: Sequence[int]) -> None:
        """One transaction: the fine-tuned version row and its requests applied -> finetuned."""
        with _write(self.engine) as c:
            c.execute(insert(versions).values(**version_row))
            self._transition(c, list(ids), "applied", "finetuned", finetuned_version=version_row["version"])

    def set_metrics(self, version: int, metrics: dict[str, Any]) -> None:
        with _write(self.engine) as c:
            c.execute(
                update(versions).where(versions.c.version == version).values(metrics=json.dumps(metrics))
            )

    def versions(self) -> list[dict[str, Any]]:
        with self.engine.connect() as c:
            return [dict(r._mapping) for r in c.execute(select(versions).order_by(versions.c.version))]

    def latest_version(self) -> dict[str, Any] | None:
        with self.engine.connect() as c:
            return _row(c.execute(select(versions).order_by(versions.c.version.desc()).limit(1)).first())

    # ------------------------------------------------------------------------ ledger
    def ledger_entries(self, after: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        q = select(ledger.c.entry).where(ledger.c.seq > after).order_by(ledger.c.seq)
        if limit is not None:
            q = q.limit(limit)
        with self.engine.connect() as c:
            return [json.loads(e) for (e,) in c.execute(q)]

    def ledger_entry_of(self, deletion_id: int) -> dict[str, Any] | None:
        with self.engine.connect() as c:
            e = c.execute(select(ledger.c.entry).where(ledger.c.deletion_id == deletion_id)).scalar()
        return None if e is None else json.loads(e)

    def verify_ledger(self) -> dict[str, Any]:
        """Check the whole hash chain, that each entry's columns match its JSON, and that every
        honoured request has exactly one entry (and no other request has one)."""
        with self.engine.connect() as c:
            rows = list(c.execute(select(ledger).order_by(ledger.c.seq)))
            honoured = {
                int(i) for (i,) in c.execute(select(deletions.c.id).where(deletions.c.status.in_(HONOURED)))
            }
        entries = [json.loads(r.entry) for r in rows]
        problems: list[str] = []
        try:
            check_chain(entries)
        except UnlearnRecError as e:
            problems.append(str(e))
        for n, (r, e) in enumerate(zip(rows, entries, strict=True), 1):
            if e.get("seq") != r.seq or e.get("hash") != r.hash or e.get("deletion_id") != r.deletion_id:
                problems.append(f"ledger: entry {n} disagrees with its row")
                break
            if e.get("seq") != n:
                problems.append(f"ledger: entry {n} has sequence number {e.get('seq')}")
                break
        recorded = [int(r.deletion_id) for r in rows]
        missing = honoured - set(recorded)
        extra = set(recorded) - honoured
        if missing:
            problems.append(f"{len(missing)} applied requests have no ledger entry (e.g. {min(missing)})")
        if extra:
            problems.append(
                f"{len(extra)} ledger entries name requests that are not applied (e.g. {min(extra)})"
            )
        return {
            "ok": not problems,
            "entries": len(entries),
            "head": entries[-1]["hash"] if entries else GENESIS,
            "problems": problems,
        }

    # ------------------------------------------------------------------------ API keys
    def add_key(self, key_id: str, salt: str, digest: str, role: str, label: str | None) -> None:
        with _write(self.engine) as c:
            c.execute(
                insert(api_keys).values(
                    key_id=key_id, salt=salt, hash=digest, role=role, label=label, created_at=time.time()
                )
            )

    def key(self, key_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as c:
            return _row(c.execute(select(api_keys).where(api_keys.c.key_id == key_id)).first())

    def keys(self) -> list[dict[str, Any]]:
        with self.engine.connect() as c:
            return [dict(r._mapping) for r in c.execute(select(api_keys).order_by(api_keys.c.created_at))]

    def revoke_key(self, key_id: str) -> bool:
        with _write(self.engine) as c:
            n = c.execute(
                update(api_keys)
                .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=time.time())
            ).rowcount
        return n == 1


def safe_url(url: str) -> str:
    """``url`` without its password (for messages and logs)."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<database url>"
