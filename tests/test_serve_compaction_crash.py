"""A compaction under fire: the real server as a subprocess on the tiny model, deletion requests
from 4 concurrent clients (retried with their Idempotency-Key while the server is down), a
compaction requested while they arrive and the server killed with SIGKILL while the compaction's
process runs, then once more at a random moment; on SQLite and on PostgreSQL.

It shows: the compaction's child stops when the service dies; nothing was purged before its
install (the old versions and the raw requests are still there after the kill); the restart
abandons it cleanly and runs a new one; every acknowledged request is applied exactly once (one
ledger entry each, chain intact); the served model equals forgetting the requests that arrived
after the snapshot in one step from the new base; and a final compaction + purge leaves nothing
for ``unlearnrec serve audit`` to find.
"""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.serve_helpers import BACKENDS, db_url_for, tiny_artifacts
from tests.test_serve_crash import Server, call

httpx = pytest.importorskip("httpx")

pytestmark = [pytest.mark.slow]

CLIENTS = 4


@pytest.fixture(params=BACKENDS)
def db(request, tmp_path):
    yield from db_url_for(request.param, tmp_path)


def plan(base, n_edges: int = 60, seed: int = 0) -> list[dict]:
    """Disjoint requests (2 users, 2 items, single edges) valid in any order."""
    rng = np.random.default_rng(seed)
    tr = base.train
    users = rng.choice(np.flatnonzero(tr.user_degrees() > 0), 2, replace=False)
    items = rng.choice(np.flatnonzero(tr.item_degrees() > 0), 2, replace=False)
    free = np.flatnonzero(~np.isin(tr.users, users) & ~np.isin(tr.items, items))
    pick = rng.choice(free, n_edges, replace=False)
    bodies = [{"users": [int(u)]} for u in users] + [{"items": [int(i)]} for i in items]
    bodies += [{"edges": [[int(tr.users[k]), int(tr.items[k])]]} for k in pick]
    rng.shuffle(bodies)
    return bodies


def _pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.split(") ")[-1][:1] != "Z"


def test_compaction_survives_sigkill_and_applies_each_request_once(tmp_path, db):
    from unlearnrec.model import TrainedModel
    from unlearnrec.serve.audit import audit
    from unlearnrec.serve.auth import create_key
    from unlearnrec.serve.store import Store, compactions, deletions
    from unlearnrec.unlearn.unlearnrec import UnlearnRec

    model_dir, enc_dir = tiny_artifacts()
    base0 = TrainedModel.load(model_dir)
    state = tmp_path / "state"
    state.mkdir()
    store = Store.open(db)
    admin = create_key(store, "admin")[1]
    store.close()
    server = Server(model_dir, enc_dir, state, db, tmp_path, tmp_path / "server.log")
    server.start()
    headers = {"Authorization": f"Bearer {admin}"}
    bodies = plan(base0)
    acked: dict[int, int] = {}  # plan index -> request id
    lock = threading.Lock()
    todo = list(enumerate(bodies))

    def client(n: int) -> None:
        with httpx.Client(base_url=server.url, headers=headers, timeout=10) as c:
            while True:
                with lock:
                    if not todo:
                        return
                    k, body = todo.pop(0)
                r = call(c, "POST", "/v1/deletions", json=body, headers={"Idempotency-Key": f"k{k}"})
                assert r.status_code == 202, r.text
                with lock:
                    acked[k] = r.json()["id"]
                time.sleep(random.uniform(0.0, 0.08))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for t in threads:
        t.start()
    c = httpx.Client(base_url=server.url, headers=headers, timeout=10)
    try:
        while len(acked) < 15:
            time.sleep(0.05)
        r = call(c, "POST", "/v1/admin/compactions")
        assert r.status_code == 202, r.text
        cid = r.json()["id"]
        # wait until its process runs (its pid is recorded once it is started), then kill the server
        deadline = time.monotonic() + 60
        st = Store.open(db)
        while True:
            with st.engine.connect() as conn:
                row = conn.execute(compactions.select().where(compactions.c.id == cid)).first()
            if row.status == "running" and row.pid:
                break
            assert time.monotonic() < deadline, row
            time.sleep(0.05)
        child = row.pid
        assert child and _pid_alive(child)
        server.kill()
        # the child notices its parent is gone and stops by itself
        deadline = time.monotonic() + 15
        while _pid_alive(child):
            assert time.monotonic() < deadline, "the compaction process outlived the service"
            time.sleep(0.1)
        # nothing was purged early: the raw requests and the old versions are all still there
        with st.engine.connect() as conn:
            row = conn.execute(compactions.select().where(compactions.c.id == cid)).first()
            payloads = [
                json.loads(p)
                for (p,) in conn.execute(deletions.select().with_only_columns(deletions.c.payload))
            ]
        assert row.status == "running" and row.purged_at is None
        assert all(isinstance(p, list) for p in payloads)
        assert (state / "versions").is_dir() and any((state / "versions").iterdir())
        assert not (state / "bases" / f"c{cid:06d}" / "COMPLETE").exists()
        st.close()
        server.start()
        # one more SIGKILL at a random moment while the clients go on
        time.sleep(random.uniform(0.5, 4.0))
        server.kill()
        server.start()
        for t in threads:
            t.join(120)
        assert len(acked) == len(bodies)
        # settle: every request applied, no compaction under way
        deadline = time.monotonic() + 180
        while True:
            q = call(c, "GET", "/v1/deletions", params={"status": "queued"}).json()["items"]
            active = [
                x
                for x in call(c, "GET", "/v1/admin/compactions").json()["items"]
                if x["status"] in ("requested", "running", "trained", "done")
            ]
            if not q and not active:
                break
            assert time.monotonic() < deadline, (q, active)
            time.sleep(0.2)
        comps = {x["id"]: x for x in call(c, "GET", "/v1/admin/compactions").json()["items"]}
        assert comps[cid]["status"] == "abandoned" and comps[cid]["purged_at"] is None
        assert any(x["trigger"] == "restart" and x["status"] == "purged" for x in comps.values()), comps
        # exactly once: one ledger entry per acknowledged request, chain intact
        ids = sorted(set(acked.values()))
        assert len(ids) == len(bodies)
        for i in ids:
            v = call(c, "GET", f"/v1/deletions/{i}").json()
            assert v["status"] == "applied" and v["ledger"] is not None, v
        check = call(c, "GET", "/v1/ledger/verify").json()
        assert check["ok"] and check["entries"] == len(bodies), check
        seen = []
        cursor = None
        while True:
            page = call(
                c, "GET", "/v1/ledger", params={"limit": 1000, **({"cursor": cursor} if cursor else {})}
            ).json()
            seen += [e["deletion_id"] for e in page["entries"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert sorted(seen) == ids
        # the served model = forget(new base, requests applied after the snapshot) in one step
        models = call(c, "GET", "/v1/models").json()
        cur = next(v for v in models["versions"] if v["version"] == models["current"])
        server.stop()
        st = Store.open(db)
        with st.engine.connect() as conn:
            last = conn.execute(
                compactions.select().where(compactions.c.status == "purged").order_by(compactions.c.id.desc())
            ).first()
            post = [
                dict(r._mapping)
                for r in conn.execute(deletions.select().where(deletions.c.compaction.is_(None)))
            ]
        st.close()
        bdir = state / "bases" / f"c{last.id:06d}"
        nb = TrainedModel.load(bdir / "model")
        if post:
            from unlearnrec.serve.worker import request_of

            req = None
            for r in post:
                q = request_of(r, nb.train)
                req = q if req is None else req.merge(q)
            ref = (
                UnlearnRec.from_encoder(bdir / "encoder", nb, finetune_epochs=0)
                .forget(nb, nb.train, req)
                .model
            )
            served = TrainedModel.load(state / "versions" / f"v{cur['version']:06d}")
            assert cur["kind"] == "ours0"
            assert torch.allclose(ref.backbone.e0, served.backbone.e0, atol=1e-6)
        else:
            assert cur["kind"] == "compacted" and cur["version"] == last.base_version
        # a final compaction absorbs the rest; then nothing forgotten is stored anywhere
        server.start()
        r = call(c, "POST", "/v1/admin/compactions")
        assert r.status_code == 202
        fin = r.json()["id"]
        deadline = time.monotonic() + 120
        while call(c, "GET", f"/v1/admin/compactions/{fin}").json()["status"] != "purged":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        server.stop()
        rep = audit(state, db)
        assert rep.ok, [str(f) for f in rep.findings]
    finally:
        c.close()
        server.stop()
