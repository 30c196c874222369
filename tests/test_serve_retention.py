"""Retention (issue #20) in-process on a tiny model: a REAL compaction (a child process that
retrains the base and pre-trains its encoder), the purge, the audit that finds every kind of
planted leftover, new interactions, readmissions and the compaction endpoints."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient  # noqa: E402

from tests.serve_helpers import tiny_artifacts
from unlearnrec.cli import main as cli
from unlearnrec.model import TrainedModel
from unlearnrec.serve.app import create_app
from unlearnrec.serve.audit import AuditError, audit
from unlearnrec.serve.auth import create_key
from unlearnrec.serve.service import ServeConfig, Service
from unlearnrec.serve.store import deletions, new_interactions
from unlearnrec.unlearn.unlearnrec import UnlearnRec


def open_service(state, **cfg) -> Service:
    model, encoder = tiny_artifacts()
    return Service.open(model, encoder, state, config=ServeConfig(**cfg))


def compact(svc: Service, timeout: float = 240.0) -> dict:
    """Request a compaction and drive it (as the worker thread would) until it settles."""
    row, created = svc.compactor.request("manual")
    assert created
    t = time.monotonic()
    while time.monotonic() - t < timeout:
        svc.compactor.tick()
        row = svc.compactor.get(int(row["id"]))
        if row["status"] in ("purged", "failed", "abandoned"):
            return row
        time.sleep(0.1)
    raise AssertionError(f"compaction did not finish: {row}")


@pytest.fixture(scope="module")
def compacted(tmp_path_factory):
    """A state after deletions (one edge, one user, one item) + a real compaction + purge."""
    state = tmp_path_factory.mktemp("retention") / "state"
    svc = open_service(state)
    svc.start(worker=False)
    tr = svc.base.train
    user = int(tr.users[-1])
    item = int(np.bincount(tr.items).argmin())  # a rare item
    keep = (tr.users != user) & (tr.items != item)
    e = int(np.flatnonzero(keep)[3])
    edge = (int(tr.users[e]), int(tr.items[e]))
    assert svc.submit({"edges": [list(edge)]}, "edge-key")[0] == 202
    assert svc.submit({"users": [user]}, None)[0] == 202
    assert svc.submit({"items": [item]}, None)[0] == 202
    assert svc.worker.step() == 3
    old_base = TrainedModel.load(tiny_artifacts()[0])
    row = compact(svc)
    yield {
        "svc": svc,
        "state": state,
        "row": row,
        "edge": edge,
        "user": user,
        "item": item,
        "old_base": old_base,
    }
    svc.stop()


def test_compaction_retrains_without_the_forgotten_data(compacted):
    svc, row = compacted["svc"], compacted["row"]
    assert row["status"] == "purged", row
    assert row["requests"] == 3 and row["reapplied"] == 0
    base = svc.base
    u, i = compacted["edge"]
    assert not base.train.contains([u], [i])[0]
    assert not np.isin(base.train.users, [compacted["user"]]).any()
    assert not np.isin(base.train.items, [compacted["item"]]).any()
    # everything else of the old training set is still there
    old = compacted["old_base"].train
    rest = old.subset((old.users != compacted["user"]) & (old.items != compacted["item"]))
    assert len(base.train) == len(rest) - 1
    # forgotten nodes: recorded, zero layer-0 rows (model and encoder), no recommendations
    assert compacted["user"] in base.forgotten_users and compacted["item"] in base.forgotten_items
    assert float(base.backbone.e0.detach()[compacted["user"]].abs().sum()) == 0.0
    nu = base.train.num_users
    h0 = svc.worker.method.encoder.h0
    assert (
        float(h0[compacted["user"]].abs().sum()) == 0 and float(h0[nu + compacted["item"]].abs().sum()) == 0
    )
    assert svc.worker.served.version == row["base_version"] == row["served_version"]
    assert svc.worker.served.kind == "compacted"
    # a real retrain: a fresh initialisation trained with the base's recipe, not a copy
    assert not torch.equal(base.backbone.e0, compacted["old_base"].backbone.e0)
    assert base.meta["train_config"] == compacted["old_base"].meta["train_config"]


def test_purge_leaves_fingerprints_and_a_verifiable_ledger(compacted):
    svc, state = compacted["svc"], compacted["state"]
    removed = json.loads(svc.compactor.get(int(compacted["row"]["id"]))["report"])["purge"]["removed"]
    assert "versions/v000001" in removed and not (state / "versions" / "v000001").exists()
    assert not (state / "compactions" / "c000001").exists()
    with svc.store.engine.connect() as c:
        rows = [dict(r._mapping) for r in c.execute(deletions.select())]
    for r in rows:
        assert json.loads(r["payload"]) == {"purged_in": 1}
        assert r["body_hash"].startswith("h:")
    assert rows[0]["idempotency_key"].startswith("h:")
    v = svc.store.verify_ledger()
    assert v["ok"] and v["entries"] == 3, v
    for e in svc.store.ledger_entries():
        assert "payload" not in e and not isinstance(e.get("users"), list)
    # the request is still answerable, with its verification and ledger entry
    view = svc.get_deletion(1)
    assert view["status"] == "applied" and view["verification"]["passed"] in (True, None)
    assert view["ledger"]["seq"] == 1
    # a retry with the same Idempotency-Key and body finds the same request, not a new one
    u, i = compacted["edge"]
    status, again = svc.submit({"edges": [[u, i]]}, "edge-key")
    assert status == 202 and again["id"] == 1
    # forgotten nodes stay forgotten after the purge
    from unlearnrec.serve.service import ApiError

    with pytest.raises(ApiError) as e:
        svc.submit({"users": [compacted["user"]]}, None)
    assert e.value.status == 409
    with pytest.raises(ApiError) as e:
        svc.recommendations(str(compacted["user"]), 5)
    assert e.value.status == 410
    recs = svc.recommendations(str(u), 40)["items"]
    assert compacted["item"] not in [x["id"] for x in recs] and i not in [x["id"] for x in recs]


def test_audit_passes_after_compaction_and_purge(compacted, capsys):
    rep = audit(compacted["state"])
    assert rep.ok, [str(f) for f in rep.findings]
    assert rep.checkpoints >= 2 and rep.forgotten["requests"] == 3
    assert cli(["serve", "audit", "--state", str(compacted["state"])]) == 0
    assert "audit passed" in capsys.readouterr().out


def _plant_and_find(state, plant, expect_where: str, undo) -> None:
    plant()
    try:
        rep = audit(state)
        assert not rep.ok
        assert any(expect_where in f.where for f in rep.findings), [str(f) for f in rep.findings]
    finally:
        undo()
    assert audit(state).ok


def test_audit_finds_each_planted_leftover(compacted, capsys):
    state, svc = compacted["state"], compacted["svc"]
    u, i = compacted["edge"]
    old_model = tiny_artifacts()[0]

    # 1. an old checkpoint (the original base: trained on, and holding, the forgotten edges)
    dst = state / "versions" / "v000001"
    _plant_and_find(
        state,
        lambda: shutil.copytree(old_model, dst),
        "versions/v000001/tensors.safetensors",
        lambda: shutil.rmtree(dst),
    )
    # 2. a cached split holding the forgotten pair (TSV) and one as arrays (npz)
    split = state / "cache" / "train_split.tsv"
    _plant_and_find(
        state,
        lambda: (split.parent.mkdir(exist_ok=True), split.write_text(f"user\titem\n1\t2\n{u}\t{i}\n")),
        "cache/train_split.tsv",
        lambda: split.unlink(),
    )
    npz = state / "cache" / "split.npz"
    _plant_and_find(
        state,
        lambda: np.savez(npz, users=np.array([u, 0]), items=np.array([i, 1])),
        "cache/split.npz",
        lambda: npz.unlink(),
    )
    # ... and an interaction of the forgotten user in a JSON cache
    js = state / "cache" / "pending.json"
    _plant_and_find(
        state,
        lambda: js.write_text(json.dumps({"pairs": [[compacted["user"], 0], [1, 1]]})),
        "cache/pending.json",
        lambda: js.unlink(),
    )
    # 3. a log line naming the forgotten pair
    logf = state / "logs" / "service.log"
    _plant_and_find(
        state,
        lambda: (
            logf.parent.mkdir(exist_ok=True),
            logf.write_text(f"12:00:01 INFO worker: ok\n12:00:02 DEBUG removing edge ({u}, {i})\n"),
        ),
        "logs/service.log",
        lambda: logf.unlink(),
    )

    # 4. database rows holding a raw forgotten pair: a new interaction, a request's payload
    def add_row():
        with svc.store.engine.begin() as c:
            c.execute(new_interactions.insert().values(user=u, item=i, added_at=0.0))

    def del_row():
        with svc.store.engine.begin() as c:
            c.execute(new_interactions.delete())

    _plant_and_find(state, add_row, "database:new_interactions", del_row)

    def raw_payload():
        with svc.store.engine.begin() as c:
            c.execute(deletions.update().where(deletions.c.id == 1).values(payload=json.dumps([[u, i]])))

    def purged_payload():
        with svc.store.engine.begin() as c:
            c.execute(
                deletions.update().where(deletions.c.id == 1).values(payload=json.dumps({"purged_in": 1}))
            )

    _plant_and_find(state, raw_payload, "database:deletions[id=1]", purged_payload)
    # 5. an embedding row of the forgotten user brought back in the served base
    ckpt = state / "bases" / "c000001" / "model" / "tensors.safetensors"
    saved = ckpt.read_bytes()

    def revive():
        from safetensors.torch import load_file, save_file

        t = load_file(str(ckpt))
        t["e0"][compacted["user"]] = 1.0
        save_file(t, str(ckpt))

    _plant_and_find(state, revive, "bases/c000001/model/tensors.safetensors", lambda: ckpt.write_bytes(saved))
    # the command names the file and exits 1
    logf.parent.mkdir(exist_ok=True)
    logf.write_text(f"forgot {u},{i}\n")
    try:
        assert cli(["serve", "audit", "--state", str(state)]) == 1
        assert "logs/service.log" in capsys.readouterr().out
    finally:
        logf.unlink()


def test_audit_of_nothing_is_an_error(tmp_path, capsys):
    with pytest.raises(AuditError, match="no such state"):
        audit(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AuditError, match="empty"):
        audit(tmp_path / "empty")
    assert cli(["serve", "audit", "--state", str(tmp_path / "empty")]) == 2
    assert "empty" in capsys.readouterr().err
    # a service that has forgotten nothing yet: nothing to audit, not "0 of 0 ok"
    svc = open_service(tmp_path / "fresh")
    svc.start(worker=False)
    svc.stop()
    with pytest.raises(AuditError, match="nothing has been forgotten"):
        audit(tmp_path / "fresh")


def test_purge_redacts_log_lines_before_it(tmp_path):
    svc = open_service(tmp_path / "state")
    svc.start(worker=False)
    try:
        tr = svc.base.train
        u, i = int(tr.users[7]), int(tr.items[7])
        svc.submit({"edges": [[u, i]]}, None)
        svc.worker.step()
        logs = tmp_path / "state" / "logs"
        logs.mkdir()
        (logs / "access.log").write_text(f"POST /v1/deletions edges=[[{u}, {i}]]\nGET /healthz 200\n")
        row = compact(svc)
        assert row["status"] == "purged"
        assert (logs / "access.log").read_text() == "GET /healthz 200\n"
        assert audit(tmp_path / "state").ok
    finally:
        svc.stop()


def test_requests_during_a_compaction_are_reapplied_on_the_new_base(tmp_path):
    svc = open_service(tmp_path / "state")
    svc.start(worker=False)
    try:
        tr = svc.base.train
        e1, e2, e3 = ([int(tr.users[k]), int(tr.items[k])] for k in (2, 40, 80))
        svc.submit({"edges": [e1]}, None)
        svc.worker.step()
        row, _ = svc.compactor.request("manual")
        svc.compactor.tick()  # snapshot + child started
        assert svc.compactor.get(int(row["id"]))["status"] == "running"
        svc.submit({"edges": [e2]}, None)  # applied on the old base while it runs
        svc.worker.step()
        svc.submit({"edges": [e3]}, None)  # still queued when it installs
        t = time.monotonic()
        while svc.compactor.get(int(row["id"]))["status"] in ("running", "trained", "done"):
            assert time.monotonic() - t < 240
            svc.compactor.tick()
            time.sleep(0.1)
        row = svc.compactor.get(int(row["id"]))
        assert row["status"] == "purged" and row["requests"] == 1 and row["reapplied"] == 1
        svc.worker.step()  # e3 on the new base
        served = svc.worker.served
        for u, i in (e1, e2, e3):
            assert not served.model.train.contains([u], [i])[0]
        # exactly once: one ledger entry per request, chain intact
        v = svc.store.verify_ledger()
        assert v["ok"] and v["entries"] == 3
        assert sorted(e["deletion_id"] for e in svc.store.ledger_entries()) == [1, 2, 3]
        # the served model is forget(new base, requests after the snapshot) in one step
        base = svc.base
        method = UnlearnRec.from_encoder(svc.encoder_dir, base, finetune_epochs=0)
        from unlearnrec.unlearn.base import Request

        req = Request.of_edges(base.train, [e2[0], e3[0]], [e2[1], e3[1]])
        ref = method.forget(base, base.train, req).model
        assert torch.allclose(ref.backbone.e0, served.model.backbone.e0, atol=1e-6)
        # a restart recovers the same state, from the state alone (no --model / --encoder needed)
        svc.stop()
        svc2 = Service.open(None, None, tmp_path / "state")
        svc2.start(worker=False)
        assert svc2.worker.served.version == served.version
        assert torch.allclose(svc2.worker.served.model.backbone.e0, served.model.backbone.e0)
        svc2.stop()
    finally:
        svc.stop()


class Api:
    def __init__(self, svc: Service, client: TestClient):
        self.svc = svc
        self.c = client
        self.keys = {r: create_key(svc.store, r)[1] for r in ("reader", "operator", "admin")}

    def h(self, role: str = "admin") -> dict:
        return {"Authorization": f"Bearer {self.keys[role]}"}


@pytest.fixture
def api(tmp_path):
    svc = open_service(tmp_path / "state")
    with TestClient(create_app(svc, start_worker=False)) as client:
        yield Api(svc, client)


def test_new_interactions_are_validated_and_compacted(api):
    svc, c = api.svc, api.c
    tr = svc.base.train
    csr = tr.to_csr()
    u = int(tr.users[0])
    free = [int(x) for x in np.flatnonzero(csr[u].toarray().ravel() == 0)[:3]]
    post = lambda body, role="operator": c.post("/v1/interactions", json=body, headers=api.h(role))  # noqa: E731
    assert post({"interactions": [[u, free[0]]]}, "reader").status_code == 403
    r = post({"interactions": [[u, free[0]], [u, free[1]]]})
    assert r.status_code == 202 and r.json()["added"] == 2 and r.json()["pending"] == 2
    r = post({"interactions": [[u, free[0]]]})
    assert r.status_code == 409 and "already pending" in r.json()["error"]["message"]
    r = post({"interactions": [[u, int(tr.items[0])]]})
    assert r.status_code == 409 and "training store" in r.json()["error"]["message"]
    r = post({"interactions": [[u, free[2]], [u, free[2]]]})
    assert r.status_code == 422 and r.json()["error"]["code"] == "duplicate"
    r = post({"interactions": [[tr.num_users, 0]]})
    assert r.status_code == 422 and "interactions[0]" in r.json()["error"]["message"]
    r = post({"interactions": [[0, tr.num_items + 5]]})
    assert r.status_code == 422 and r.json()["error"]["code"] == "unknown_id"
    assert post({"interactions": []}).status_code == 422
    assert post({"edges": [[0, 1]]}).status_code == 422
    # a forgotten user: rejected until an admin readmits it
    gone = int(tr.users[-1])
    gfree = int(np.flatnonzero(csr[gone].toarray().ravel() == 0)[0])
    assert c.post("/v1/deletions", json={"users": [gone]}, headers=api.h("operator")).status_code == 202
    r = post({"interactions": [[gone, gfree]]})
    assert r.status_code == 409 and r.json()["error"]["code"] == "forgotten"
    assert (
        c.post("/v1/admin/readmissions", json={"users": [gone]}, headers=api.h("operator")).status_code == 403
    )
    assert c.post("/v1/admin/readmissions", json={"users": [u]}, headers=api.h()).status_code == 409
    assert c.post("/v1/admin/readmissions", json={"users": [gone]}, headers=api.h()).status_code == 201
    assert post({"interactions": [[gone, gfree]]}).status_code == 202
    assert c.get("/v1/interactions", headers=api.h("operator")).json() == {"pending": 3}
    svc.worker.step()
    # the compaction endpoints
    assert c.post("/v1/admin/compactions", headers=api.h("operator")).status_code == 403
    r = c.post("/v1/admin/compactions", headers=api.h())
    assert r.status_code == 202 and r.json()["status"] == "requested"
    cid = r.json()["id"]
    r2 = c.post("/v1/admin/compactions", headers=api.h())
    assert r2.status_code == 409 and r2.json()["compaction"]["id"] == cid
    assert c.get("/v1/admin/compactions/999", headers=api.h()).status_code == 404
    t = time.monotonic()
    while c.get(f"/v1/admin/compactions/{cid}", headers=api.h()).json()["status"] != "purged":
        assert time.monotonic() - t < 240
        svc.compactor.tick()
        time.sleep(0.1)
    view = c.get(f"/v1/admin/compactions/{cid}", headers=api.h()).json()
    assert view["interactions"] == 3 and view["requests"] == 1 and view["seconds"] > 0
    base = svc.base
    assert base.train.contains([u, u], free[:2]).all()
    # the readmitted user: its new interaction is in, it is no longer forgotten
    assert base.train.contains([gone], [gfree])[0] and gone not in base.forgotten_users
    assert c.get("/v1/interactions", headers=api.h("operator")).json() == {"pending": 0}
    assert [x["id"] for x in c.get("/v1/admin/compactions", headers=api.h()).json()["items"]] == [cid]
    # forgotten again after its readmission: the newer request wins at the next compaction
    r = c.post("/v1/deletions", json={"users": [gone]}, headers=api.h("operator"))
    assert r.status_code == 202, r.text
    assert (
        post(
            {
                "interactions": [
                    [gone, int(np.flatnonzero(base.train.to_csr()[gone].toarray().ravel() == 0)[0])]
                ]
            }
        ).status_code
        == 409
    )
    svc.worker.step()
    r = c.post("/v1/admin/compactions", headers=api.h())
    cid2 = r.json()["id"]
    t = time.monotonic()
    while c.get(f"/v1/admin/compactions/{cid2}", headers=api.h()).json()["status"] != "purged":
        assert time.monotonic() - t < 240
        svc.compactor.tick()
        time.sleep(0.1)
    assert gone in svc.base.forgotten_users and not np.isin(svc.base.train.users, [gone]).any()
    assert audit(svc.versions.root.parent).ok


def test_operator_page_needs_an_admin(api):
    c = api.c
    r = c.get("/ui", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/ui/login"
    assert c.get("/ui", headers=api.h("operator")).status_code == 403
    r = c.get("/ui", headers=api.h())
    assert r.status_code == 200 and "Queue depth" in r.text and "Ledger" in r.text
    r = c.post("/ui/login", data={"key": api.keys["operator"]}, follow_redirects=False)
    assert r.status_code == 403 and "set-cookie" not in r.headers
    r = c.post("/ui/login", data={"key": api.keys["admin"]}, follow_redirects=False)
    assert r.status_code == 303
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and api.keys["admin"] not in cookie
    assert c.get("/ui").status_code == 200  # the client keeps the cookie
    assert c.post("/ui/logout", follow_redirects=False).status_code == 303
    assert c.get("/ui", follow_redirects=False).status_code == 303
