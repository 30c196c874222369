"""A durable, tamper-evident record of what was forgotten.

The ledger is a JSON-lines file, one entry per honoured request. An entry holds *fingerprints*
of the request (sha256 over its sorted edge keys and the id space), never the forgotten edges
themselves, so the record proves what was forgotten without re-disclosing it. Entries are
hash-chained (each stores the sha256 of the previous entry), so editing or deleting a past entry
is detected by :meth:`Ledger.check`. Appending rewrites the file through a temporary file and
an atomic rename after fsync: an entry is durable before the request is acknowledged.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from unlearnrec.errors import UnlearnRecError
from unlearnrec.io.checkpoint import atomic_write_text

GENESIS = "0" * 64


def _entry_hash(entry: dict[str, Any]) -> str:
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class Ledger:
    """An append-only, hash-chained JSONL ledger at ``path``."""

    path: Path

    def __init__(self, path: str | os.PathLike):
        object.__setattr__(self, "path", Path(path))

    def entries(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        out = []
        try:
            text = self.path.read_text()
        except UnicodeDecodeError:
            raise UnlearnRecError(f"{self.path}: not a ledger (not UTF-8 text)") from None
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise UnlearnRecError(f"{self.path}:{n}: corrupt ledger entry") from None
            if not isinstance(entry, dict):
                raise UnlearnRecError(f"{self.path}:{n}: corrupt ledger entry (not a JSON object)")
            out.append(entry)
        return out

    def check(self) -> int:
        """Verify the hash chain; returns the number of entries or raises on tampering."""
        prev = GENESIS
        entries = self.entries()
        for n, e in enumerate(entries, 1):
            if e.get("prev") != prev or e.get("hash") != _entry_hash(e):
                raise UnlearnRecError(f"{self.path}: entry {n} was altered or removed (hash chain broken)")
            prev = e["hash"]
        return len(entries)

    def append(self, record: dict[str, Any]) -> dict[str, Any]:
        """Append one entry (with sequence number, UTC time and chain hashes) durably."""
        entries = self.entries()
        if entries:
            self.check()
        entry = {
            "seq": len(entries) + 1,
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **record,
            "prev": entries[-1]["hash"] if entries else GENESIS,
        }
        entry["hash"] = _entry_hash(entry)
        text = "".join(json.dumps(e, sort_keys=True) + "\n" for e in [*entries, entry])
        atomic_write_text(self.path, text)
        return entry

    def require(self) -> int:
        """:meth:`check` for an audit: a missing file or a ledger with no entries is an error.

        An audit must never report "intact" about nothing: a mistyped path or an empty file says
        nothing about what was forgotten.
        """
        if not self.path.exists():
            raise UnlearnRecError(f"no ledger at {self.path}")
        if not self.path.is_file():
            raise UnlearnRecError(f"{self.path}: not a ledger file")
        n = self.check()
        if n == 0:
            raise UnlearnRecError(f"{self.path}: the ledger has no entries")
        return n

    def find(self, request_fingerprint: str) -> list[dict[str, Any]]:
        """Entries that honoured the request with this fingerprint."""
        return [e for e in self.entries() if e.get("request_fingerprint") == request_fingerprint]


def entry_hash(entry: dict[str, Any]) -> str:
    """sha256 of an entry without its own ``hash`` field (canonical JSON): the chain's link."""
    return _entry_hash(entry)


def check_chain(entries: list[dict[str, Any]], where: str = "ledger") -> int:
    """Verify a hash chain of entries (each ``prev`` = the previous ``hash``, from :data:`GENESIS`);
    returns the number of entries or raises :class:`UnlearnRecError` naming the first broken one."""
    prev = GENESIS
    for n, e in enumerate(entries, 1):
        if e.get("prev") != prev or e.get("hash") != _entry_hash(e):
            raise UnlearnRecError(f"{where}: entry {n} was altered or removed (hash chain broken)")
        prev = e["hash"]
    return len(entries)
