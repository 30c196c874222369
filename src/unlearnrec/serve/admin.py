"""Retention's HTTP surface (issue #20): new interactions, compactions, readmissions.

* ``POST /v1/interactions`` (operator): ``{"interactions": [[user, item], ...]}`` in the dataset's
  raw ids, appended to the training store and effective at the next compaction. Rejected, with
  nothing stored: an id outside the configured id space (422 ``unknown_id``), a pair given twice
  (422 ``duplicate``), a pair already in the training store or already pending (409
  ``duplicate``), an interaction of a forgotten (or queued-for-forgetting) user or item that an
  admin has not readmitted (409 ``forgotten``).
* ``GET /v1/interactions`` (operator): how many are pending.
* ``POST /v1/admin/compactions`` (admin): request a compaction (202; an active one is returned
  with 409); ``GET /v1/admin/compactions[/{id}]``: their status.
* ``POST /v1/admin/readmissions`` (admin): ``{"users": [...]}`` or ``{"items": [...]}``: forgotten
  users / items may have interactions again (they stay without recommendations until the next
  compaction retrains them).
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from unlearnrec.serve.auth import Principal
from unlearnrec.serve.retention import forget_marks, readmit_marks, still_forgotten
from unlearnrec.serve.store import _write, deletions, new_interactions, readmissions

if TYPE_CHECKING:
    from unlearnrec.serve.service import Service

from unlearnrec.serve.service import ApiError


class InteractionsBody(BaseModel):
    """``{"interactions": [[user, item], ...]}`` in the dataset's raw ids."""

    model_config = ConfigDict(extra="forbid")
    interactions: list[list[int | str]]


class ReadmitBody(BaseModel):
    """One of ``users`` / ``items`` (raw ids)."""

    model_config = ConfigDict(extra="forbid")
    users: list[int | str] | None = None
    items: list[int | str] | None = None


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds")


def pending_interactions(svc: Service) -> int:
    with svc.store.engine.connect() as c:
        return int(
            c.execute(
                select(func.count())
                .select_from(new_interactions)
                .where(new_interactions.c.compaction.is_(None))
            ).scalar()
        )


def _forgotten_now(svc: Service) -> tuple[set[int], set[int]]:
    """Users / items forgotten or queued for forgetting, less those readmitted since."""
    fps = svc.fps
    forgets = forget_marks(svc.store, fps, ("queued", "applied", "finetuned"))
    readmits = readmit_marks(svc.store)
    with svc._lock:
        bu, bi = set(svc._blocked_users), set(svc._blocked_items)
    users = {u for u in bu if still_forgotten("user", fps.user(u), forgets, readmits)}
    items = {i for i in bi if still_forgotten("item", fps.item(i), forgets, readmits)}
    return users, items


def add_interactions(svc: Service, body: dict[str, Any]) -> dict[str, Any]:
    """Validate and append new interactions (all or none)."""
    values = body.get("interactions")
    if not isinstance(values, list):
        raise ApiError(422, "invalid", "interactions: must be a list of [user, item] pairs")
    if not values:
        raise ApiError(422, "empty", "interactions: empty list: nothing to add")
    if len(values) > svc.config.max_ids:
        raise ApiError(
            413, "too_large", f"interactions: {len(values)} pairs, more than the limit {svc.config.max_ids}"
        )
    ua, ia, keys = svc.parse_pairs(values, "interactions")
    us, its = ua.tolist(), ia.tolist()
    ni = max(svc.base.train.num_items, 1)
    inside = svc.base.train.contains(ua, ia)
    if inside.any():
        n = int(np.flatnonzero(inside)[0])
        raise ApiError(
            409, "duplicate", f"interactions[{n}]: {list(values[n])!r} is already in the training store"
        )
    fu, fi = _forgotten_now(svc)
    for n in range(len(us)):
        if us[n] in fu:
            raise ApiError(
                409,
                "forgotten",
                f"interactions[{n}]: user {values[n][0]!r} is forgotten (an admin may readmit it)",
            )
        if its[n] in fi:
            raise ApiError(
                409,
                "forgotten",
                f"interactions[{n}]: item {values[n][1]!r} is forgotten (an admin may readmit it)",
            )
    now = time.time()
    try:
        with _write(svc.store.engine) as c:
            q = select(new_interactions.c.user, new_interactions.c.item).where(
                new_interactions.c.user.in_(sorted(set(us)))
            )
            have = {int(u) * ni + int(i) for u, i in c.execute(q)}
            dup = [n for n in range(len(us)) if int(keys[n]) in have]
            if dup:
                raise ApiError(
                    409, "duplicate", f"interactions[{dup[0]}]: {list(values[dup[0]])!r} is already pending"
                )
            c.execute(
                insert(new_interactions),
                [{"user": int(u), "item": int(i), "added_at": now} for u, i in zip(us, its, strict=True)],
            )
    except IntegrityError:
        raise ApiError(409, "duplicate", "interactions: one of these pairs was added meanwhile") from None
    return {"added": len(us), "pending": pending_interactions(svc), "effective": "at the next compaction"}


def readmit(svc: Service, body: dict[str, Any]) -> dict[str, Any]:
    """Let forgotten users (or items) have interactions again."""
    given = [k for k in ("users", "items") if body.get(k) is not None]
    if len(given) != 1:
        raise ApiError(422, "invalid", "give exactly one of users, items")
    kind = given[0]
    values = body[kind]
    if not isinstance(values, list) or not values:
        raise ApiError(422, "invalid", f"{kind}: must be a non-empty list")
    idmap = svc.users if kind == "users" else svc.items
    fu, fi = _forgotten_now(svc)
    forgotten_ids = fu if kind == "users" else fi
    ids = []
    for n, raw in enumerate(values):
        i = idmap.lookup(raw)
        if i is None:
            raise ApiError(422, "unknown_id", f"{kind}[{n}]: unknown {idmap.what} id {raw!r}")
        if i not in forgotten_ids:
            raise ApiError(409, "not_forgotten", f"{kind}[{n}]: {idmap.what} {raw!r} is not forgotten")
        ids.append(i)
    fp = svc.fps.user if kind == "users" else svc.fps.item
    now = time.time()
    with _write(svc.store.engine) as c:
        after = int(c.execute(select(func.max(deletions.c.id))).scalar() or 0)
        c.execute(
            insert(readmissions),
            [{"kind": kind[:-1], "fp": fp(i), "at": now, "after_deletion": after} for i in sorted(set(ids))],
        )
    return {
        "readmitted": len(set(ids)),
        "kind": kind,
        "effective": "new interactions are accepted now; recommendations after the next compaction",
    }


def compaction_view(row: dict[str, Any]) -> dict[str, Any]:
    out = {
        "id": int(row["id"]),
        "status": row["status"],
        "trigger": row["trigger"],
        "requested_at": _iso(row["requested_at"]),
        "started_at": _iso(row["started_at"]),
        "finished_at": _iso(row["finished_at"]),
        "installed_at": _iso(row["installed_at"]),
        "purged_at": _iso(row["purged_at"]),
        "from_version": row["from_version"],
        "base_version": row["base_version"],
        "served_version": row["served_version"],
        "requests": row["requests"],
        "interactions": row["interactions"],
        "train_edges": row["train_edges"],
        "reapplied": row["reapplied"],
        "error": row["error"],
    }
    if row["started_at"] and row["installed_at"]:
        out["seconds"] = round(row["installed_at"] - row["started_at"], 3)
    out["report"] = json.loads(row["report"]) if row.get("report") else None
    return out


def register(app, service: Service, operator, admin) -> None:
    """Add the retention routes to ``app`` (the operator page: ``ui.register_ui``)."""

    @app.post("/v1/interactions", status_code=202, tags=["retention"])
    def post_interactions(body: InteractionsBody, _p: Principal = operator) -> JSONResponse:
        """Append interactions to the training store (effective at the next compaction)."""
        return JSONResponse(add_interactions(service, body.model_dump()), status_code=202)

    @app.get("/v1/interactions", tags=["retention"])
    def get_interactions(_p: Principal = operator) -> dict[str, Any]:
        """How many new interactions wait for the next compaction."""
        return {"pending": pending_interactions(service)}

    @app.post("/v1/admin/compactions", status_code=202, tags=["retention"])
    def post_compaction(_p: Principal = admin) -> JSONResponse:
        """Request a compaction now (409 with the active one if one is under way)."""
        row, created = service.compactor.request("manual")
        view = compaction_view(row)
        if not created:
            return JSONResponse(
                {
                    "error": {
                        "code": "compaction_active",
                        "message": f"compaction {row['id']} is {row['status']}",
                    },
                    "compaction": view,
                },
                status_code=409,
            )
        return JSONResponse(view, status_code=202, headers={"Location": f"/v1/admin/compactions/{row['id']}"})

    @app.get("/v1/admin/compactions", tags=["retention"])
    def list_compactions(_p: Principal = admin) -> dict[str, Any]:
        """The latest compactions, newest first."""
        return {"items": [compaction_view(r) for r in service.compactor.rows(50)]}

    @app.get("/v1/admin/compactions/{cid}", tags=["retention"])
    def get_compaction(cid: int, _p: Principal = admin) -> dict[str, Any]:
        row = service.compactor.get(cid)
        if row is None:
            raise ApiError(404, "not_found", f"no compaction {cid}")
        return compaction_view(row)

    @app.post("/v1/admin/readmissions", status_code=201, tags=["retention"])
    def post_readmission(body: ReadmitBody, _p: Principal = admin) -> dict[str, Any]:
        """Readmit forgotten users or items (they may have interactions again)."""
        return readmit(service, body.model_dump(exclude_none=True))
