"""The service's HTTP API in-process (FastAPI TestClient) on a tiny model: every endpoint, status
code, role and bad input; the worker is stepped by hand so that each test knows what was applied."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient  # noqa: E402  (after the importorskip in serve_helpers)

from tests.serve_helpers import BACKENDS, db_url_for, tiny_artifacts
from unlearnrec.errors import ConfigError
from unlearnrec.model import TrainedModel
from unlearnrec.serve.app import create_app
from unlearnrec.serve.auth import create_key
from unlearnrec.serve.service import ServeConfig, Service
from unlearnrec.serve.store import Store, StoreError
from unlearnrec.unlearn.base import Request
from unlearnrec.unlearn.unlearnrec import UnlearnRec


class Api:
    """A started service, its client and one key per role."""

    def __init__(self, svc: Service, client: TestClient):
        self.svc = svc
        self.c = client
        self.keys = {r: create_key(svc.store, r)[1] for r in ("reader", "operator", "admin")}

    def h(self, role: str = "admin", **extra) -> dict:
        return {"Authorization": f"Bearer {self.keys[role]}", **extra}

    def post(self, body, key: str | None = None, role: str = "operator", **kw):
        headers = self.h(role)
        if key is not None:
            headers["Idempotency-Key"] = key
        return self.c.post("/v1/deletions", json=body, headers=headers, **kw)

    def get(self, path: str, role: str = "admin", **kw):
        return self.c.get(path, headers=self.h(role), **kw)

    def step(self) -> int:
        return self.svc.worker.step()

    def queued(self) -> int:
        return self.svc.store.counts()["queued"]


def open_service(state, db=None, **cfg) -> Service:
    model, encoder = tiny_artifacts()
    return Service.open(model, encoder, state, db, config=ServeConfig(**cfg))


@pytest.fixture
def api(tmp_path):
    svc = open_service(tmp_path / "state")
    with TestClient(create_app(svc, start_worker=False)) as client:
        yield Api(svc, client)


@pytest.fixture
def base() -> TrainedModel:
    return TrainedModel.load(tiny_artifacts()[0])


def edge_of(base: TrainedModel, n: int) -> list[int]:
    return [int(base.train.users[n]), int(base.train.items[n])]


def edge_avoiding(base: TrainedModel, users=(), items=()) -> list[int]:
    """The first training edge touching none of ``users`` / ``items``."""
    tr = base.train
    n = int(np.flatnonzero(~np.isin(tr.users, list(users)) & ~np.isin(tr.items, list(items)))[0])
    return edge_of(base, n)


def error(r) -> dict:
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    return body["error"]


# ------------------------------------------------------------------------------- operations
def test_health_ready_metrics_need_no_key(api):
    assert api.c.get("/healthz").json() == {"status": "ok"}
    r = api.c.get("/readyz")
    assert r.status_code == 200 and r.json()["ready"] and r.json()["version"] == 0
    api.post({"users": [3]})
    text = api.c.get("/metrics").text
    assert "unlearnrec_queue_depth 1.0" in text
    assert 'unlearnrec_requests{status="queued"} 1.0' in text
    assert "unlearnrec_model_version 0.0" in text
    api.step()
    text = api.c.get("/metrics").text
    assert "unlearnrec_queue_depth 0.0" in text and "unlearnrec_model_version 1.0" in text
    assert "unlearnrec_apply_latency_seconds_count 1.0" in text
    assert api.c.get("/docs").status_code == 200
    assert "/v1/deletions" in api.c.get("/openapi.json").json()["paths"]


def test_readyz_is_503_when_the_database_is_gone(api, monkeypatch):
    monkeypatch.setattr(api.svc.store, "ping", lambda: False)
    r = api.c.get("/readyz")
    assert r.status_code == 503 and r.json()["checks"]["database"] is False


# ------------------------------------------------------------------------------- auth and roles
@pytest.mark.parametrize(
    "method,path,needed",
    [
        ("post", "/v1/deletions", "operator"),
        ("get", "/v1/deletions", "operator"),
        ("get", "/v1/deletions/1", "operator"),
        ("get", "/v1/users/0/recommendations", "reader"),
        ("get", "/v1/models", "admin"),
        ("get", "/v1/ledger", "admin"),
        ("get", "/v1/ledger/verify", "admin"),
        ("get", "/v1/keys", "admin"),
        ("post", "/v1/keys", "admin"),
        ("delete", "/v1/keys/abc", "admin"),
    ],
)
def test_every_route_checks_key_and_role(api, method, path, needed):
    body = {"json": {"users": [0]}} if (method, path) == ("post", "/v1/deletions") else {}
    if path == "/v1/keys" and method == "post":
        body = {"json": {"role": "reader"}}
    call = getattr(api.c, method)
    r = call(path, **body)
    assert r.status_code == 401 and error(r)["code"] == "unauthorized"
    assert r.headers["www-authenticate"] == "Bearer"
    r = call(path, headers={"Authorization": "Bearer ulr_000000000000_wrong"}, **body)
    assert r.status_code == 401 and "invalid" in error(r)["message"]
    r = call(path, headers={"X-API-Key": "not-a-key"}, **body)
    assert r.status_code == 401
    ranks = ["reader", "operator", "admin"]
    for role in ranks:
        r = call(path, headers=api.h(role), **body)
        if ranks.index(role) < ranks.index(needed):
            assert r.status_code == 403, (role, r.text)
            assert error(r)["code"] == "forbidden" and f"needs '{needed}'" in error(r)["message"]
        else:
            assert r.status_code not in (401, 403), (role, r.text)
    assert api.queued() <= 1  # only the one allowed POST queued anything


def test_x_api_key_header_works_and_a_revoked_key_fails(api):
    key_id, key = create_key(api.svc.store, "reader")
    assert api.c.get("/v1/users/0/recommendations", headers={"X-API-Key": key}).status_code == 200
    assert api.c.delete(f"/v1/keys/{key_id}", headers=api.h()).status_code == 204
    r = api.c.get("/v1/users/0/recommendations", headers={"X-API-Key": key})
    assert r.status_code == 401
    assert api.c.delete(f"/v1/keys/{key_id}", headers=api.h()).status_code == 404


def test_keys_are_created_listed_and_stored_hashed(api):
    r = api.c.post("/v1/keys", json={"role": "operator", "label": "ops"}, headers=api.h())
    assert r.status_code == 201
    made = r.json()
    assert made["role"] == "operator" and made["key"].startswith("ulr_")
    r = api.c.post("/v1/deletions", json={"users": [1]}, headers={"X-API-Key": made["key"]})
    assert r.status_code == 202
    listed = api.get("/v1/keys").json()["keys"]
    assert {"key_id", "role", "label", "revoked"} == set(listed[0])
    assert made["key_id"] in {k["key_id"] for k in listed}
    row = api.svc.store.key(made["key_id"])
    secret = made["key"].split("_", 2)[2]
    assert secret not in json.dumps(row, default=str)  # only the salted hash is stored
    r = api.c.post("/v1/keys", json={"role": "root"}, headers=api.h())
    assert r.status_code == 422 and "role" in error(r)["message"]


# ------------------------------------------------------------------------------- deletions
def test_user_deletion_lifecycle(api, base):
    r = api.post({"users": [5]}, key="u5")
    assert r.status_code == 202
    body = r.json()
    assert (
        body["status"] == "queued"
        and body["kind"] == "users"
        and r.headers["location"] == f"/v1/deletions/{body['id']}"
    )
    assert body["size"] == int((base.train.users == 5).sum())
    assert api.get(f"/v1/deletions/{body['id']}", role="operator").json()["status"] == "queued"
    assert api.get("/v1/users/5/recommendations", role="reader").status_code == 200
    assert api.step() == 1
    d = api.get(f"/v1/deletions/{body['id']}", role="operator").json()
    assert d["status"] == "applied" and d["version"] == 1 and d["latency_s"] >= 0
    assert d["applied_at"] >= d["accepted_at"]
    names = {c["name"]: c for c in d["verification"]["checks"]}
    assert names["edges_absent"]["passed"] and names["nodes_erased"]["passed"]
    assert names["membership"]["passed"] is None  # every edge touches the erased user
    assert d["ledger"]["seq"] == 1 and len(d["ledger"]["hash"]) == 64
    r = api.get("/v1/users/5/recommendations", role="reader")
    assert r.status_code == 410 and error(r)["code"] == "forgotten"


def test_item_deletion_never_recommended_again(api, base):
    item = 7
    seen = [u for u in range(base.train.num_users) if item not in base.train.items[base.train.users == u]]
    before = [api.get(f"/v1/users/{u}/recommendations?k=40", role="reader").json() for u in seen]
    assert any(item in [e["id"] for e in b["items"]] for b in before)
    assert api.post({"items": [item]}).status_code == 202
    api.step()
    for u in range(base.train.num_users):
        got = api.get(f"/v1/users/{u}/recommendations?k=40", role="reader").json()
        assert got["version"] == 1 and item not in [e["id"] for e in got["items"]]


def test_edge_deletion_verified_and_not_recommended_back(api, base):
    edges = [edge_of(base, n) for n in (0, 1, 25, 50, 75, 100, 125, 150, 175, 200, 250, 300)]
    r = api.post({"edges": edges})
    assert r.status_code == 202 and r.json()["size"] == len(edges)
    api.step()
    d = api.get(f"/v1/deletions/{r.json()['id']}").json()
    checks = {c["name"]: c for c in d["verification"]["checks"]}
    assert checks["edges_absent"]["passed"]
    m = checks["membership"]
    assert {"mi_ng", "mi_bf", "auc"} <= set(m) and m["passed"] is not None  # >= 10 edges: judged
    served = api.svc.worker.served
    assert (
        served.model.train.intersects(
            Request.of_edges(base.train, [e[0] for e in edges], [e[1] for e in edges]).edges
        )
        == 0
    )
    u, i = edges[0]
    got = api.get(f"/v1/users/{u}/recommendations?k=40", role="reader").json()
    assert i not in [e["id"] for e in got["items"]]


def test_accumulated_requests_merge_into_one_cumulative_version(api, base):
    e = edge_avoiding(base, users=[2], items=[3])
    for body in ({"users": [2]}, {"items": [3]}, {"edges": [e]}):
        assert api.post(body).status_code == 202
    assert api.step() == 3
    assert api.step() == 0
    versions = api.get("/v1/models").json()["versions"]
    assert [v["version"] for v in versions] == [0, 1] and versions[1]["requests"] == 3
    # the served model is forgetting the union in one step from the base (1e-6)
    method = UnlearnRec.from_encoder(tiny_artifacts()[1], base)
    union = Request.of_users(base.train, [2]).merge(Request.of_items(base.train, [3]))
    union = union.merge(Request.of_edges(base.train, [e[0]], [e[1]]))
    ref = method.forget(base, base.train, union).model
    got = api.svc.worker.served.model
    assert torch.allclose(got.backbone.e0, ref.backbone.e0, atol=1e-6, rtol=0)
    assert got.train.fingerprint() == ref.train.fingerprint()
    # and the version on disk equals it too
    disk = TrainedModel.load(api.svc.versions.path(1))
    assert torch.equal(disk.backbone.e0, got.backbone.e0)


@pytest.mark.parametrize(
    "body,status,code,field",
    [
        ({"users": []}, 422, "empty", "users"),
        ({"items": []}, 422, "empty", "items"),
        ({"edges": []}, 422, "empty", "edges"),
        ({}, 422, "invalid", "exactly one"),
        ({"users": [1], "items": [1]}, 422, "invalid", "exactly one"),
        ({"userz": [1]}, 422, "invalid", "userz"),
        ({"users": [1, 999]}, 422, "unknown_id", "users[1]"),
        ({"users": ["abc"]}, 422, "unknown_id", "users[0]"),
        ({"users": [-1]}, 422, "unknown_id", "users[0]"),
        ({"items": [40]}, 422, "unknown_id", "items[0]"),
        ({"users": [1, 1]}, 422, "duplicate", "users"),
        ({"users": "1"}, 422, "invalid", "users"),
        ({"users": [[1]]}, 422, "invalid", "users"),
        ({"edges": [[1, 2, 3]]}, 422, "invalid", "edges[0]"),
        ({"edges": [[0, 999]]}, 422, "unknown_id", "edges[0]"),
    ],
)
def test_bad_requests_are_rejected_and_nothing_is_queued(api, body, status, code, field):
    r = api.post(body)
    assert r.status_code == status, r.text
    err = error(r)
    assert err["code"] == code and field in err["message"], err
    assert api.queued() == 0 and api.svc.store.list_deletions() == []


def test_edge_not_in_training_set_duplicate_and_already_forgotten(api, base):
    tr = base.train
    non = next(
        (u, i) for u in range(tr.num_users) for i in range(tr.num_items) if not tr.contains([u], [i])[0]
    )
    r = api.post({"edges": [edge_of(base, 0), list(non)]})
    assert (
        r.status_code == 422
        and error(r)["code"] == "not_in_training_set"
        and "edges[1]" in error(r)["message"]
    )
    r = api.post({"edges": [edge_of(base, 0), edge_of(base, 0)]})
    assert r.status_code == 422 and error(r)["code"] == "duplicate" and "edges[1]" in error(r)["message"]
    assert api.queued() == 0
    assert api.post({"edges": [edge_of(base, 0)]}).status_code == 202
    # pending and, after the step, applied: both are 409, and nothing new is queued
    for _ in range(2):
        r = api.post({"edges": [edge_of(base, 1), edge_of(base, 0)]})
        assert (
            r.status_code == 409
            and error(r)["code"] == "already_forgotten"
            and "edges[1]" in error(r)["message"]
        )
        api.step()
    assert len(api.svc.store.list_deletions()) == 1
    u = int(tr.users[0])
    assert api.post({"users": [u]}).status_code == 202
    r = api.post({"edges": [edge_of(base, int(np.flatnonzero(tr.users == u)[-1]))]})
    assert r.status_code == 409 and "its user" in error(r)["message"]
    r = api.post({"users": [u]})
    assert r.status_code == 409 and "users[0]" in error(r)["message"]


def test_size_limits_are_413(tmp_path, base):
    svc = open_service(tmp_path / "s", max_ids=3, max_request_edges=5, max_body_bytes=400)
    with TestClient(create_app(svc, start_worker=False)) as client:
        api = Api(svc, client)
        r = api.post({"items": [0, 1, 2, 3]})
        assert r.status_code == 413 and "items" in error(r)["message"] and "limit 3" in error(r)["message"]
        heavy = int(np.argmax(base.train.user_degrees()))
        r = api.post({"users": [heavy]})
        assert r.status_code == 413 and "users" in error(r)["message"] and "limit 5" in error(r)["message"]
        r = api.post({"users": list(range(200))})
        assert r.status_code == 413 and error(r)["code"] == "too_large" and "body" in error(r)["message"]
        # a streamed body (no Content-Length) is cut off too
        chunks = (b'{"users": [' + b"1, " * 100 + b"1]}" for _ in range(1))
        r = client.post(
            "/v1/deletions", content=chunks, headers=api.h("operator", **{"content-type": "application/json"})
        )
        assert r.status_code == 413
        assert svc.store.list_deletions() == []


def test_malformed_json_is_422(api):
    r = api.c.post(
        "/v1/deletions",
        content=b"{not json",
        headers=api.h("operator", **{"content-type": "application/json"}),
    )
    assert r.status_code == 422 and error(r)["code"] == "invalid"
    assert api.queued() == 0


def test_idempotency_key(api):
    a = api.post({"users": [4]}, key="req-1")
    b = api.post({"users": [4]}, key="req-1")
    assert a.status_code == b.status_code == 202 and a.json()["id"] == b.json()["id"]
    r = api.post({"users": [9]}, key="req-1")
    assert r.status_code == 422 and error(r)["code"] == "idempotency_key_reused"
    api.step()
    c = api.post({"users": [4]}, key="req-1")  # a retry after it was applied: the same request
    assert c.status_code == 202 and c.json()["id"] == a.json()["id"] and c.json()["status"] == "applied"
    assert len(api.svc.store.list_deletions()) == 1 and api.svc.store.verify_ledger()["entries"] == 1
    r = api.post({"users": [8]}, key="x" * 300)
    assert r.status_code == 422 and "Idempotency-Key" in error(r)["message"]


def test_listing_with_status_filter_and_cursor(api):
    ids = [api.post({"users": [u]}).json()["id"] for u in range(7)]
    api.step()
    ids += [api.post({"users": [u]}).json()["id"] for u in range(7, 10)]
    seen, cursor = [], None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = api.get("/v1/deletions", role="operator", params=params).json()
        seen += [d["id"] for d in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids
    q = api.get("/v1/deletions", params={"status": "queued"}).json()["items"]
    assert [d["id"] for d in q] == ids[7:] and all(d["status"] == "queued" for d in q)
    a = api.get("/v1/deletions", params={"status": "applied"}).json()["items"]
    assert [d["id"] for d in a] == ids[:7]
    r = api.get("/v1/deletions", params={"status": "done"})
    assert r.status_code == 422 and "status" in error(r)["message"]
    r = api.get("/v1/deletions", params={"cursor": "zz"})
    assert r.status_code == 422 and "cursor" in error(r)["message"]
    r = api.get("/v1/deletions", params={"limit": 0})
    assert r.status_code == 422 and "limit" in error(r)["message"]
    r = api.get("/v1/deletions/99999")
    assert r.status_code == 404 and error(r)["code"] == "not_found"
    r = api.get("/v1/deletions/abc")
    assert r.status_code == 422 and "deletion_id" in error(r)["message"]


def test_recommendations(api, base):
    r = api.get("/v1/users/0/recommendations", role="reader", params={"k": 5})
    body = r.json()
    assert r.status_code == 200 and body["user"] == 0 and body["version"] == 0 and len(body["items"]) == 5
    seen = set(base.train.items[base.train.users == 0].tolist())
    assert not seen & {e["id"] for e in body["items"]}
    scores = [e["score"] for e in body["items"]]
    assert scores == sorted(scores, reverse=True)
    assert "title" not in body["items"][0]  # the tiny dataset has no titles
    r = api.get("/v1/users/0/recommendations", role="reader", params={"k": 1000})
    assert len(r.json()["items"]) == base.train.num_items - len(seen)
    for k in (0, -1, 1001):
        r = api.get("/v1/users/0/recommendations", role="reader", params={"k": k})
        assert r.status_code == 422 and "k" in error(r)["message"]
    r = api.get("/v1/users/9999/recommendations", role="reader")
    assert r.status_code == 404 and "unknown user" in error(r)["message"]
    assert api.c.get("/v1/nothing").status_code == 404
    assert api.c.put("/healthz").status_code == 405


def test_models_and_ledger(api, base):
    api.post({"users": [1]})
    api.step()
    api.post({"items": [2]})
    assert api.post({"edges": [edge_avoiding(base, users=[1], items=[2])]}).status_code == 202
    api.step()
    m = api.get("/v1/models").json()
    assert m["current"] == 2 and m["method"] == "unlearnrec/ours0"
    v = m["versions"]
    assert [x["kind"] for x in v] == ["base", "ours0", "ours0"] and [x["parent"] for x in v] == [None, 0, 1]
    assert len({x["set_fingerprint"] for x in v}) == 3 and [x["requests"] for x in v] == [0, 1, 3]
    led = api.get("/v1/ledger", params={"limit": 2}).json()
    assert [e["seq"] for e in led["entries"]] == [1, 2] and led["next_cursor"] == "2"
    rest = api.get("/v1/ledger", params={"cursor": "2"}).json()
    assert [e["seq"] for e in rest["entries"]] == [3] and rest["next_cursor"] is None
    entry = rest["entries"][0]
    assert entry["version"] == 2 and entry["kind"] == "edges" and entry["edges"] == 1
    # fingerprints only: the ledger never holds the forgotten ids
    assert "payload" not in entry and all(not isinstance(x, list) for x in entry.values())
    ok = api.get("/v1/ledger/verify").json()
    assert ok == {"ok": True, "entries": 3, "head": entry["hash"], "problems": []}


# ------------------------------------------------------------------------------- crash windows
def test_crash_between_version_write_and_commit(tmp_path, base, monkeypatch):
    """The version directory is written, the commit never happens: at restart the debris is
    removed, the request is still queued, and it is applied exactly once."""
    state = tmp_path / "state"
    svc = open_service(state)
    svc.start(worker=False)
    svc.submit({"users": [6]}, "k")

    def crash(*a, **k):
        raise KeyboardInterrupt  # stands for the process dying here

    monkeypatch.setattr(svc.store, "publish", crash)
    with pytest.raises(KeyboardInterrupt):
        svc.worker.step()
    assert svc.versions.path(1).is_dir()  # written, not recorded
    svc.close()
    monkeypatch.undo()
    again = open_service(state)
    again.start(worker=False)
    assert not again.versions.path(1).exists() and again.worker.served.version == 0
    assert again.store.counts()["queued"] == 1
    again.worker.step()
    assert again.store.counts() == {"queued": 0, "applied": 1, "finetuned": 0, "failed": 0}
    assert again.store.verify_ledger()["entries"] == 1 and again.worker.served.version == 1
    again.stop()


def test_crash_between_commit_and_swap(tmp_path, monkeypatch):
    """Committed but not yet served: the request reads 'queued' until the served model honours
    it; a restart serves the committed version and completes the missing verification."""
    state = tmp_path / "state"
    svc = open_service(state)
    svc.start(worker=False)
    _, view = svc.submit({"users": [6]}, None)
    import unlearnrec.serve.worker as worker_mod

    real = worker_mod.Served.of
    calls = []

    def crash(*a, **k):
        calls.append(1)
        raise KeyboardInterrupt

    monkeypatch.setattr(worker_mod.Served, "of", crash)
    with pytest.raises(KeyboardInterrupt):
        svc.worker.step()
    assert calls and svc.store.get(view["id"])["status"] == "applied"
    assert svc.get_deletion(view["id"])["status"] == "queued"  # not served yet: not reported applied
    svc.close()
    monkeypatch.setattr(worker_mod.Served, "of", real)
    again = open_service(state)
    again.start(worker=False)
    d = again.get_deletion(view["id"])
    assert again.worker.served.version == 1 and d["status"] == "applied"
    assert d["verification"]["passed"] and d["ledger"]["seq"] == 1
    assert again.worker.step() == 0 and again.store.verify_ledger()["ok"]
    again.stop()


def test_a_failing_request_is_marked_failed_and_its_ids_freed(api, monkeypatch):
    real = api.svc.worker.method.forget

    def forget(model, train, request):
        if 9 in request.users:
            raise RuntimeError("boom")
        return real(model, train, request)

    monkeypatch.setattr(api.svc.worker.method, "forget", forget)
    a = api.post({"users": [8]}).json()["id"]
    b = api.post({"users": [9]}).json()["id"]
    api.step()
    da, db = api.get(f"/v1/deletions/{a}").json(), api.get(f"/v1/deletions/{b}").json()
    assert da["status"] == "applied" and db["status"] == "failed" and "boom" in db["reason"]
    monkeypatch.undo()
    assert api.post({"users": [9]}).status_code == 202  # the failed request's ids may be asked again
    api.step()
    assert api.svc.store.verify_ledger() == {**api.svc.store.verify_ledger(), "ok": True, "entries": 2}


def test_idle_finetuning_publishes_a_finetuned_version(tmp_path):
    svc = open_service(tmp_path / "s", finetune_epochs=1, finetune_idle_s=0.0)
    svc.start(worker=False)
    _, v = svc.submit({"users": [3]}, None)
    svc.worker.step()
    svc.worker._idle_work()
    assert svc.worker.served.version == 2 and svc.worker.served.kind == "finetune"
    d = svc.get_deletion(v["id"])
    assert d["status"] == "finetuned" and d["version"] == 1 and d["finetuned_version"] == 2
    versions = svc.models()["versions"]
    assert versions[-1]["kind"] == "finetune" and versions[-1]["method"] == "unlearnrec/ours(1)"
    assert versions[-1]["set_fingerprint"] == versions[-2]["set_fingerprint"]
    svc.worker._idle_work()
    assert svc.worker.served.version == 2  # nothing new to fine-tune
    svc.stop()


def test_an_idle_version_whose_fine_tuning_was_skipped_says_so():
    """The encoder config's gate (finetune_min_mi_ng) or a guard without a validation split skip the
    fine-tuning: the version's method says Ours(0) and why, not Ours(k)."""
    from unlearnrec.serve.worker import _finetune_label

    assert _finetune_label(1, {}) == "unlearnrec/ours(1)"
    why = "Ours(0)'s MI-NG on the request 0.612 < finetune_min_mi_ng 1.25"
    assert _finetune_label(1, {"finetune_skipped": why}) == f"unlearnrec/ours(0): fine-tuning skipped ({why})"


# ------------------------------------------------------------------------------- start-up
def test_state_is_bound_to_its_base_model(tmp_path):
    from tests.contracts import tiny_trained_model

    state = tmp_path / "state"
    open_service(state).close()
    other = tiny_trained_model(seed=1)
    other.save(tmp_path / "other")
    with pytest.raises(Exception, match="another base model|another model"):
        Service.open(tmp_path / "other", tiny_artifacts()[1], state)


def test_an_unlearned_model_cannot_be_the_base(tmp_path, base):
    method = UnlearnRec.from_encoder(tiny_artifacts()[1], base)
    res = method.forget(base, base.train, Request.of_users(base.train, [1]))
    res.model.save(tmp_path / "unlearned")
    with pytest.raises(ConfigError, match="must be the original"):
        Service.open(tmp_path / "unlearned", tiny_artifacts()[1], tmp_path / "state")


def test_one_service_per_state_directory(tmp_path):
    svc = open_service(tmp_path / "state")
    with pytest.raises(ConfigError, match="another 'unlearnrec serve' is running"):
        open_service(tmp_path / "state")
    svc.close()
    open_service(tmp_path / "state").close()  # released


def test_newer_schema_is_refused_at_start(tmp_path):
    state = tmp_path / "state"
    svc = open_service(state)
    svc.store.set_meta("schema_version", "99")
    svc.close()
    with pytest.raises(StoreError, match="schema version 99"):
        open_service(state)


@pytest.mark.parametrize("backend", BACKENDS)
def test_service_on_each_backend_round_trip(tmp_path, backend):
    """The same service on SQLite and PostgreSQL: requests survive a restart and apply once."""
    for url in db_url_for(backend, tmp_path):
        svc = open_service(tmp_path / "state", db=url)
        svc.start(worker=False)
        ids = [svc.submit({"users": [u]}, f"k{u}")[1]["id"] for u in range(4)]
        svc.worker.step()
        svc.submit({"items": [5]}, "k-item")
        svc.close()
        again = open_service(tmp_path / "state", db=url)
        again.start(worker=False)
        assert again.submit({"users": [0]}, "k0")[1]["id"] == ids[0]  # the same key after restart
        again.worker.step()
        assert again.store.counts()["applied"] == 5 and again.store.verify_ledger()["ok"]
        assert again.worker.served.version == 2
        again.stop()


def test_cli_keys_create_and_serve_errors(tmp_path, capsys):
    from tests.conftest import run_cli

    code, out, err = run_cli(capsys, "serve", "keys", "create", "--state", tmp_path / "st", "--role", "admin")
    assert code == 0 and out.startswith("ulr_") and "shown once" in err
    key_id = out.strip().split("_")[1]
    store = Store.open(f"sqlite:///{tmp_path / 'st' / 'service.sqlite'}")
    assert store.key(key_id)["role"] == "admin" and out.strip() not in json.dumps(
        store.key(key_id), default=str
    )
    store.close()
    code, out, err = run_cli(capsys, "serve", "keys", "create", "--state", tmp_path / "st", "--role", "root")
    assert code == 2 and "unknown role 'root'" in err and len(err.strip().splitlines()) == 1
    code, out, err = run_cli(capsys, "serve", "--state", tmp_path / "st")
    assert code == 2 and "needs --model, --encoder" in err


def test_base_index_and_merge_all_equal_the_library_requests(base):
    from unlearnrec.serve.worker import BaseIndex, empty_request, merge_all, set_fingerprint

    idx = BaseIndex(base.train)
    users = [7, 3, 11]
    shared = int(base.train.items[base.train.users == 7][0])  # an item of user 7: the sets overlap
    items = sorted({shared, 0})
    ru = idx.request({"kind": "users", "payload": json.dumps(users)})
    ri = idx.request({"kind": "items", "payload": json.dumps(items)})
    lu, li = Request.of_users(base.train, users), Request.of_items(base.train, items)
    for got, want in ((ru, lu), (ri, li)):
        assert got.edges.fingerprint() == want.edges.fingerprint() and len(got.edges) > 0
        assert np.array_equal(got.users, want.users) and np.array_equal(got.items, want.items)
    e = edge_avoiding(base, users=users, items=items)
    re_ = idx.request({"kind": "edges", "payload": json.dumps([e])})
    merged = merge_all(empty_request(base.train), [ru, ri, re_])
    pairwise = lu.merge(li).merge(Request.of_edges(base.train, [e[0]], [e[1]]))
    assert set_fingerprint(merged) == set_fingerprint(pairwise)
    assert len(merged.edges) == len(pairwise.edges) < len(lu.edges) + len(li.edges) + 1  # overlaps merged


@pytest.mark.realdata
def test_the_served_methods_read_the_models_validation_split(tmp_path, realdata):
    """The encoder config's stopping rule and ``forget_guard`` need the validation split: both the
    Ours(0) method and the idle fine-tuning one get the dataset's, so a guarded default is live."""
    from tests.serve_helpers import ml100k_artifacts

    model, encoder = ml100k_artifacts(str(realdata))
    svc = Service.open(
        model, encoder, tmp_path / "s", data_dir=realdata, config=ServeConfig(finetune_epochs=1)
    )
    try:
        assert len(svc.data.val) > 0
        assert svc.worker.method.validation is svc.data.val
        assert svc.worker.finetune_method.validation is svc.data.val
    finally:
        svc.close()
