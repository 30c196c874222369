"""The HTTP routes (FastAPI): thin translations to :class:`~unlearnrec.serve.service.Service`.

Versioned under ``/v1``; OpenAPI at ``/docs``; every error is ``{"error": {"code", "message"}}``.
Roles (``auth.py``): reader < operator < admin. ``/healthz``, ``/readyz`` and ``/metrics`` need
no key (they reveal no personal data; put them behind the network's own controls).
"""

from __future__ import annotations

import time
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from unlearnrec import __version__
from unlearnrec.serve.auth import ROLES, AuthError, KeyRows, Principal, authenticate, create_key
from unlearnrec.serve.metrics import CONTENT_TYPE
from unlearnrec.serve.service import ApiError, Service

Id = int | str


class DeletionBody(BaseModel):
    """One of ``users``, ``items`` or ``edges`` (``[[user, item], ...]``), in the dataset's raw ids."""

    model_config = ConfigDict(extra="forbid")
    users: list[Id] | None = None
    items: list[Id] | None = None
    edges: list[list[Id]] | None = None


class KeyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: str = Field(description="reader, operator or admin")
    label: str | None = Field(None, max_length=200)


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
}


class _TooLarge(Exception):
    pass


class BodyLimit:
    """Pure ASGI middleware: a body larger than ``limit`` bytes gets 413 (declared or streamed)."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = int(limit)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await _error(413, "too_large", f"body: more than {self.limit} bytes")(scope, receive, send)
        seen = 0
        started = False

        async def limited():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return msg

        async def tracking_send(msg):
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, limited, tracking_send)
        except _TooLarge:
            if not started:
                await _error(413, "too_large", f"body: more than {self.limit} bytes")(scope, receive, send)


def create_app(service: Service, start_worker: bool = True) -> FastAPI:
    """The FastAPI application over ``service`` (started in the app's lifespan, stopped after)."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        service.start(worker=start_worker)
        try:
            yield
        finally:
            service.stop()

    app = FastAPI(
        title="unlearnrec forgetting service",
        version=__version__,
        description="Deletion requests over HTTP, applied by UnlearnRec as new model versions, exactly once.",
        lifespan=lifespan,
    )
    app.add_middleware(BodyLimit, limit=service.config.max_body_bytes)

    @app.exception_handler(ApiError)
    async def _api_error(_req: Request, e: ApiError):
        return _error(e.status, e.code, e.message)

    @app.exception_handler(AuthError)
    async def _auth_error(_req: Request, e: AuthError):
        headers = {"WWW-Authenticate": "Bearer"} if e.status == 401 else None
        return _error(e.status, "unauthorized" if e.status == 401 else "forbidden", str(e), headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req: Request, e: RequestValidationError):
        err = e.errors()[0] if e.errors() else {"loc": (), "msg": "invalid request"}
        loc = [str(x) for x in err.get("loc", ()) if x not in ("body", "query", "path", "header")]
        field = ".".join(loc) or "body"
        msg = err.get("msg", "invalid")
        if err.get("type") == "extra_forbidden":
            msg = (
                "unknown field (valid: users, items, edges)"
                if loc and loc[0] not in ("role", "label")
                else msg
            )
        return _error(422, "invalid", f"{field}: {msg}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, e: StarletteHTTPException):
        return _error(e.status_code, _HTTP_CODES.get(e.status_code, "error"), str(e.detail))

    keys = KeyRows(service.store)

    def role(needed: str):
        # async: runs on the event loop, no thread hop (a cache miss reads one row)
        async def dep(
            authorization: Annotated[str | None, Header()] = None,
            x_api_key: Annotated[str | None, Header()] = None,
        ) -> Principal:
            key = x_api_key
            if authorization:
                scheme, _, value = authorization.partition(" ")
                key = value.strip() if scheme.lower() == "bearer" else None
            return authenticate(keys, key, needed)

        return Depends(dep)

    reader, operator, admin = (role(r) for r in ROLES)

    # retention (issue #20): new interactions, compactions, readmissions and the page /ui
    from unlearnrec.serve.admin import register as register_retention

    register_retention(app, service, operator, admin)
    from unlearnrec.serve.ui import register_ui

    register_ui(app, service)

    # ------------------------------------------------------------------ deletions
    @app.post("/v1/deletions", status_code=202, tags=["deletions"])
    def post_deletion(
        body: DeletionBody,
        idempotency_key: Annotated[str | None, Header()] = None,
        _p: Principal = operator,
    ) -> JSONResponse:
        """Queue a deletion request (validated now, applied by the worker); 202 once durable."""
        status, view = service.submit(body.model_dump(exclude_none=True), idempotency_key)
        return JSONResponse(view, status_code=status, headers={"Location": f"/v1/deletions/{view['id']}"})

    @app.get("/v1/deletions", tags=["deletions"])
    def list_deletions(
        status: str | None = None,
        cursor: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        _p: Principal = operator,
    ) -> dict[str, Any]:
        """Deletion requests in acceptance order, optionally of one status; page with ``next_cursor``."""
        return service.list_deletions(status, cursor, limit)

    @app.get("/v1/deletions/{deletion_id}", tags=["deletions"])
    def get_deletion(deletion_id: int, _p: Principal = operator) -> dict[str, Any]:
        """Status, version, times, latency, verification and ledger entry of one request."""
        return service.get_deletion(deletion_id)

    # ------------------------------------------------------------------ reads
    @app.get("/v1/users/{user_id}/recommendations", tags=["recommendations"])
    async def recommendations(
        user_id: str, k: Annotated[int, Query(ge=1)] = 20, _p: Principal = reader
    ) -> JSONResponse:
        """Top-k items for a user from the current version (410 for a forgotten user).

        Served on the event loop: one small product against the served snapshot, no I/O."""
        t = time.perf_counter()
        out = service.recommendations(user_id, k)
        service.metrics.rec_seconds.observe(time.perf_counter() - t)
        return JSONResponse(out)

    @app.get("/v1/models", tags=["admin"])
    def models(_p: Principal = admin) -> dict[str, Any]:
        """The version lineage: base, method, fingerprint of the cumulative request set, metrics."""
        return service.models()

    @app.get("/v1/ledger", tags=["admin"])
    def get_ledger(
        cursor: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        _p: Principal = admin,
    ) -> dict[str, Any]:
        """Hash-chained ledger entries (fingerprints, never the forgotten data)."""
        return service.ledger(cursor, limit)

    @app.get("/v1/ledger/verify", tags=["admin"])
    def verify_ledger(_p: Principal = admin) -> dict[str, Any]:
        """Check the chain and that every applied request has exactly one entry."""
        return service.store.verify_ledger()

    @app.post("/v1/keys", status_code=201, tags=["admin"])
    def post_key(body: KeyBody, _p: Principal = admin) -> dict[str, Any]:
        """Create an API key; the key is in this response only."""
        if body.role not in ROLES:
            raise ApiError(422, "invalid", f"role: must be one of {', '.join(ROLES)}")
        key_id, key = create_key(service.store, body.role, body.label)
        return {"key_id": key_id, "role": body.role, "key": key}

    @app.get("/v1/keys", tags=["admin"])
    def list_keys(_p: Principal = admin) -> dict[str, Any]:
        rows = service.store.keys()
        return {
            "keys": [
                {
                    "key_id": r["key_id"],
                    "role": r["role"],
                    "label": r["label"],
                    "revoked": r["revoked_at"] is not None,
                }
                for r in rows
            ]
        }

    @app.delete("/v1/keys/{key_id}", status_code=204, tags=["admin"])
    def revoke_key(key_id: str, _p: Principal = admin) -> Response:
        if not service.store.revoke_key(key_id):
            raise ApiError(404, "not_found", f"no active key {key_id!r}")
        keys.drop(key_id)
        return Response(status_code=204)

    # ------------------------------------------------------------------ operations
    @app.get("/healthz", tags=["operations"])
    def healthz() -> dict[str, Any]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"])
    def readyz() -> JSONResponse:
        """A model is served, the worker runs and the database answers (else 503)."""
        ok, body = service.ready()
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics", tags=["operations"])
    def metrics() -> Response:
        """Prometheus text exposition."""
        return Response(service.metrics.text(), media_type=CONTENT_TYPE)

    return app
