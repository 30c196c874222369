"""The operator page ``/ui`` (admin role): a server-rendered Jinja2 page, no JavaScript.

It shows the queue depth, the recent deletion requests with their verification, the model
versions and their lineage, the compactions, and the ledger check. It refreshes itself every
15 seconds (an HTML ``meta refresh``).

Authentication for a browser: the API key as a header (``Authorization: Bearer`` or
``X-API-Key``, as the API takes it), or the login form at ``/ui/login``, which checks an admin
key and sets an opaque session cookie (``HttpOnly``, ``SameSite=Strict``, ``Path=/ui``,
``Secure`` over HTTPS; 8 hours). The key is never put in the cookie or in a URL; sessions live in
the server's memory (a restart asks to log in again) and end when the key is revoked or at
``POST /ui/logout``.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select

from unlearnrec.serve.auth import AuthError, authenticate
from unlearnrec.serve.store import deletions

if TYPE_CHECKING:
    from unlearnrec.serve.service import Service

COOKIE = "ulr_ui"
SESSION_S = 8 * 3600
TEMPLATES = Path(__file__).with_name("templates")


class Sessions:
    """Opaque browser sessions -> the admin key that opened them (in memory)."""

    def __init__(self):
        self._s: dict[str, tuple[str, float]] = {}

    def open(self, key_id: str) -> str:
        token = secrets.token_urlsafe(32)
        self._s[token] = (key_id, time.time() + SESSION_S)
        return token

    def key_id(self, token: str | None) -> str | None:
        if not token:
            return None
        got = self._s.get(token)
        if got is None or got[1] < time.time():
            self._s.pop(token, None)
            return None
        return got[0]

    def close(self, token: str | None) -> None:
        if token:
            self._s.pop(token, None)


def _env():
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(["html"]))
    env.filters["short"] = lambda h, n=12: (h or "")[:n]
    return env


def page_context(svc: Service) -> dict[str, Any]:
    """Everything the page shows (also handy for tests)."""
    from unlearnrec.serve.admin import compaction_view, pending_interactions

    counts = svc.store.counts()
    with svc.store.engine.connect() as c:
        rows = [
            dict(r._mapping) for r in c.execute(select(deletions).order_by(deletions.c.id.desc()).limit(25))
        ]
    served = svc.worker._served
    models = svc.models()
    return {
        "counts": counts,
        "queue": counts["queued"],
        "requests": [svc.view(r) for r in rows],
        "versions": list(reversed(models["versions"]))[:15],
        "current": models["current"],
        "compactions": [compaction_view(r) for r in svc.compactor.rows(8)],
        "ledger": svc.store.verify_ledger(),
        "pending": pending_interactions(svc),
        "worker_error": svc.worker.last_error,
        "served_kind": served.kind if served else None,
        "now": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }


def register_ui(app, service: Service) -> None:
    env = _env()
    sessions = Sessions()
    app.state.ui_sessions = sessions

    def _render(name: str, status: int = 200, **ctx) -> HTMLResponse:
        return HTMLResponse(env.get_template(name).render(**ctx), status_code=status)

    def _principal(request: Request) -> str | None:
        """The admin key id behind a header or the session cookie; None when there is none."""
        auth = request.headers.get("authorization")
        key = request.headers.get("x-api-key")
        if auth:
            scheme, _, value = auth.partition(" ")
            key = value.strip() if scheme.lower() == "bearer" else None
        if key:
            return authenticate(service.store, key, "admin").key_id  # 401/403 as the API
        kid = sessions.key_id(request.cookies.get(COOKIE))
        if kid is None:
            return None
        row = service.store.key(kid)
        if row is None or row["revoked_at"] is not None or row["role"] != "admin":
            sessions.close(request.cookies.get(COOKIE))
            return None
        return kid

    @app.get("/ui", response_class=HTMLResponse, include_in_schema=False)
    def ui(request: Request) -> Response:
        if _principal(request) is None:
            return RedirectResponse("/ui/login", status_code=303)
        return _render("ui.html", **page_context(service))

    @app.get("/ui/login", response_class=HTMLResponse, include_in_schema=False)
    def login_form() -> HTMLResponse:
        return _render("login.html")

    @app.post("/ui/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        key = (form.get("key") or [""])[0].strip()
        try:
            p = authenticate(service.store, key, "admin")
        except AuthError as e:
            return _render("login.html", status=e.status, error=str(e))
        resp = RedirectResponse("/ui", status_code=303)
        resp.set_cookie(
            COOKIE,
            sessions.open(p.key_id),
            max_age=SESSION_S,
            path="/ui",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return resp

    @app.post("/ui/logout", include_in_schema=False)
    def logout(request: Request) -> Response:
        sessions.close(request.cookies.get(COOKIE))
        resp = RedirectResponse("/ui/login", status_code=303)
        resp.delete_cookie(COOKIE, path="/ui")
        return resp
