"""API keys with roles, stored only as salted hashes.

A key reads ``ulr_<key id>_<secret>``: the key id (public, 12 hex digits) finds the row, the
secret (32 random bytes, URL-safe base64) is checked against ``sha256(salt || secret)`` with a
constant-time comparison. The secret is printed once at creation and never stored. Roles are
ordered: ``reader`` (recommendations) < ``operator`` (deletion requests and their status) <
``admin`` (keys, ledger, models); a key may do what its role and every lower role may.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

from unlearnrec.serve.store import Store

ROLES = ("reader", "operator", "admin")
_RANK = {r: n for n, r in enumerate(ROLES)}
PREFIX = "ulr_"
# compared against when the key id is unknown, so that both paths cost the same
_DUMMY_SALT = "0" * 32


class AuthError(Exception):
    """401 (``status`` = 401: missing or wrong key) or 403 (a role too low)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def hash_secret(salt: str, secret: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + secret.encode()).hexdigest()


def check_role(role: str) -> str:
    if role not in _RANK:
        from unlearnrec.errors import ConfigError

        raise ConfigError(f"unknown role '{role}' (valid: {', '.join(ROLES)})")
    return role


def create_key(store: Store, role: str, label: str | None = None) -> tuple[str, str]:
    """A new key for ``role``: stores its salted hash and returns ``(key_id, full key)`` once."""
    check_role(role)
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_hex(16)
    store.add_key(key_id, salt, hash_secret(salt, secret), role, label)
    return key_id, f"{PREFIX}{key_id}_{secret}"


@dataclass(frozen=True)
class Principal:
    key_id: str
    role: str


class KeyRows:
    """Key rows by key id, read from the store and kept for ``ttl`` seconds, so that a request
    costs no database read. Unknown ids are not cached (a key created by the CLI works at once);
    a key revoked through the API is dropped at once (:meth:`drop`), one revoked behind the
    service's back stops working within ``ttl``."""

    def __init__(self, store: Store, ttl: float = 5.0):
        self.store = store
        self.ttl = float(ttl)
        self._rows: dict[str, tuple[float, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def get(self, key_id: str) -> dict[str, Any] | None:
        now = time.monotonic()
        with self._lock:
            hit = self._rows.get(key_id)
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        row = self.store.key(key_id)
        if row is not None:
            with self._lock:
                self._rows[key_id] = (now, row)
        return row

    def drop(self, key_id: str) -> None:
        with self._lock:
            self._rows.pop(key_id, None)


def authenticate(store: Store | KeyRows, presented: str | None, needed: str) -> Principal:
    """The principal behind ``presented`` if it may act as ``needed``; else :class:`AuthError`."""
    if not presented:
        raise AuthError(401, "missing API key (send 'Authorization: Bearer <key>' or 'X-API-Key')")
    key_id, secret = _split(presented)
    lookup = store.get if isinstance(store, KeyRows) else store.key
    row = lookup(key_id) if key_id else None
    salt = row["salt"] if row else _DUMMY_SALT
    expected = row["hash"] if row else "0" * 64
    ok = hmac.compare_digest(hash_secret(salt, secret), expected)
    if not ok or row is None or row["revoked_at"] is not None:
        raise AuthError(401, "invalid or revoked API key")
    if _RANK[row["role"]] < _RANK[needed]:
        raise AuthError(403, f"this key's role '{row['role']}' may not do this (needs '{needed}')")
    return Principal(key_id, row["role"])


def _split(presented: str) -> tuple[str, str]:
    if not presented.startswith(PREFIX):
        return "", presented
    rest = presented[len(PREFIX) :]
    key_id, sep, secret = rest.partition("_")
    if not sep or len(key_id) != 12:
        return "", presented
    return key_id, secret
