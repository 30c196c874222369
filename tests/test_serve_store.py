"""The service's storage layer on SQLite and PostgreSQL: schema version, the request state
machine, idempotent acceptance, the one-transaction publish (outbox) and the ledger chain."""

from __future__ import annotations

import json
import threading

import pytest

from tests.serve_helpers import BACKENDS, db_url_for
from unlearnrec.serve.store import (
    SCHEMA_VERSION,
    ConflictError,
    Store,
    StoreError,
    body_hash,
    deletions,
    ledger,
)


@pytest.fixture(params=BACKENDS)
def url(request, tmp_path):
    yield from db_url_for(request.param, tmp_path)


@pytest.fixture
def store(url):
    s = Store.open(url)
    yield s
    s.close()


def vrow(version: int, parent: int = 0, fp: str = "f") -> dict:
    return dict(
        version=version,
        parent=parent,
        kind="ours0",
        method="unlearnrec/ours0",
        set_fingerprint=fp,
        requests=1,
        edges=1,
        users=0,
        items=0,
        train_fingerprint="t",
        path=f"v{version:06d}",
        created_at=0.0,
    )


def add(store: Store, key: str | None = None, payload=(1,), kind: str = "users"):
    return store.insert_deletion(
        key=key, digest=body_hash({kind: list(payload)}), kind=kind, payload=list(payload), size=3
    )


def test_schema_version_is_recorded_and_checked(url):
    s = Store.open(url)
    assert s.get_meta("schema_version") == str(SCHEMA_VERSION)
    s.set_meta("schema_version", str(SCHEMA_VERSION + 1))
    s.close()
    with pytest.raises(StoreError, match="schema version 2, this unlearnrec needs 1"):
        Store.open(url)


def test_foreign_tables_without_version_are_refused(url):
    s = Store.open(url)
    from sqlalchemy import text

    with s.engine.begin() as c:
        c.execute(text("DROP TABLE service_meta"))
    s.close()
    with pytest.raises(StoreError, match="no schema version"):
        Store.open(url)


def test_open_without_create_refuses_an_empty_database(url):
    with pytest.raises(StoreError, match="no service database"):
        Store.open(url, create=False)


def test_idempotent_insert_returns_the_same_row(store):
    a = add(store, "k1")
    b = add(store, "k1")
    assert not a.replayed and b.replayed and a.row["id"] == b.row["id"]
    assert store.counts()["queued"] == 1
    with pytest.raises(ConflictError, match="different request body"):
        add(store, "k1", payload=(2,))
    assert store.counts()["queued"] == 1


def test_concurrent_inserts_with_one_key_make_one_row(store):
    ids, errors = [], []

    def go():
        try:
            ids.append(add(store, "same").row["id"])
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=go) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(ids)) == 1 and len(ids) == 8
    assert store.counts()["queued"] == 1


def test_publish_moves_queued_to_applied_and_chains_the_ledger(store):
    rows = [add(store, f"k{n}", payload=(n,)).row for n in range(3)]
    entries = store.publish(vrow(1), rows[:2], [{"n": 0}, {"n": 1}])
    assert [e["seq"] for e in entries] == [1, 2]
    assert entries[1]["prev"] == entries[0]["hash"]
    assert [r["status"] for r in store.list_deletions()] == ["applied", "applied", "queued"]
    assert store.get(rows[0]["id"])["version"] == 1
    store.publish(vrow(2, 1), rows[2:], [{"n": 2}])
    check = store.verify_ledger()
    assert check["ok"] and check["entries"] == 3 and check["problems"] == []
    assert store.ledger_entry_of(rows[2]["id"])["prev"] == entries[1]["hash"]
    assert store.latest_version()["version"] == 2


def test_publish_is_one_transaction(store):
    """A request that is no longer queued makes the whole publish roll back: no version row, no
    status change, no ledger entry (the transactional outbox)."""
    a, b = add(store, "a", payload=(1,)).row, add(store, "b", payload=(2,)).row
    store.publish(vrow(1), [a], [{}])
    with pytest.raises(ConflictError, match="1 of 2 requests were not 'queued'"):
        store.publish(vrow(2, 1), [b, a], [{}, {}])
    assert store.latest_version()["version"] == 1
    assert store.get(b["id"])["status"] == "queued"
    assert store.verify_ledger()["entries"] == 1
    # the same version number again is refused too (primary key): never two rows for one version
    from sqlalchemy.exc import IntegrityError

    with pytest.raises(IntegrityError):
        store.publish(vrow(1), [b], [{}])
    assert store.get(b["id"])["status"] == "queued"


def test_state_machine_rejects_illegal_transitions(store):
    a = add(store, "a").row
    store.mark_failed(a["id"], "boom")
    assert store.get(a["id"])["status"] == "failed" and store.get(a["id"])["reason"] == "boom"
    with pytest.raises(ConflictError):
        store.publish(vrow(1), [a], [{}])  # failed -> applied is not a transition
    with pytest.raises(ConflictError):
        store.mark_failed(a["id"], "again")
    b = add(store, "b", payload=(2,)).row
    with pytest.raises(ConflictError):
        store.publish_finetuned(vrow(1), [b["id"]])  # queued -> finetuned skips applied
    store.publish(vrow(1), [b], [{}])
    store.publish_finetuned(dict(vrow(2, 1), kind="finetune"), [b["id"]])
    assert store.get(b["id"])["status"] == "finetuned" and store.get(b["id"])["finetuned_version"] == 2
    assert store.counts() == {"queued": 0, "applied": 0, "finetuned": 1, "failed": 1}


def test_ledger_tampering_is_detected(store):
    rows = [add(store, f"k{n}", payload=(n,)).row for n in range(3)]
    store.publish(vrow(1), rows, [{"n": n} for n in range(3)])
    assert store.verify_ledger()["ok"]
    e = store.ledger_entry_of(rows[1]["id"])
    e["n"] = 99
    with store.engine.begin() as c:
        c.execute(ledger.update().where(ledger.c.seq == 2).values(entry=json.dumps(e)))
    check = store.verify_ledger()
    assert not check["ok"] and "entry 2 was altered" in check["problems"][0]


def test_ledger_must_cover_every_applied_request(store):
    rows = [add(store, f"k{n}", payload=(n,)).row for n in range(2)]
    store.publish(vrow(1), rows, [{}, {}])
    with store.engine.begin() as c:  # an applied request without entry (e.g. written behind our back)
        c.execute(deletions.update().where(deletions.c.id == rows[0]["id"]).values(status="queued"))
    check = store.verify_ledger()
    assert not check["ok"] and any("name requests that are not applied" in p for p in check["problems"])


def test_cursor_paging_and_status_filter(store):
    rows = [add(store, f"k{n}", payload=(n,)).row for n in range(7)]
    store.publish(vrow(1), rows[:3], [{}] * 3)
    page1 = store.list_deletions(limit=3)
    page2 = store.list_deletions(after=page1[-1]["id"], limit=3)
    page3 = store.list_deletions(after=page2[-1]["id"], limit=3)
    ids = [r["id"] for r in page1 + page2 + page3]
    assert ids == sorted(r["id"] for r in rows)
    assert [r["id"] for r in store.list_deletions("queued")] == [r["id"] for r in rows[3:]]
    assert store.queued(2) == store.list_deletions("queued", limit=2)


def test_api_keys_rows(store):
    store.add_key("abc", "00" * 16, "h", "reader", "note")
    assert store.key("abc")["role"] == "reader" and store.key("nope") is None
    assert store.revoke_key("abc") and not store.revoke_key("abc")
    assert store.key("abc")["revoked_at"] is not None
