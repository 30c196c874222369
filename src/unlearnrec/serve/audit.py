"""``unlearnrec serve audit``: is any forgotten data still stored in the service's state?

Scans every file under the state directory and the service's database for a forgotten
(user, item) pair, an interaction of a forgotten user or item, or a forgotten user's / item's
embedding row, and names each place it finds one:

* checkpoints (``*.safetensors``, ``*.npz``, ``*.npy``): interaction lists (``train_users`` /
  ``train_items``, any ``*users`` / ``*items`` pair of equal-length integer vectors, any (n, 2)
  integer matrix) and the layer-0 rows (``e0``, the encoder's ``h0``) of forgotten nodes, which
  must be zero;
* JSON / JSON-lines: lists of ``[user, item]`` pairs, ``{"users": [...], "items": [...]}``,
  ``{"user": u, "item": i}``;
* any other text file (logs, CSV/TSV splits): each line's adjacent integers, read as internal
  ids and, where the dataset's raw ids are known, as raw ids;
* the database: applied requests whose raw ids were not yet purged, unsalted request keys or
  body hashes of purged requests, new interactions of forgotten data, ledger entries holding ids.

What "forgotten" means comes from the database (``retention.forgotten_set``): fingerprints of
purged requests and the raw ids of those not yet purged. So the audit passes only after a
compaction and its purge have removed every applied request's data. The lists of forgotten ids
that model checkpoints keep (``forgotten_users`` / ``forgotten_items``: who must get no
recommendations) are a suppression list, not the user's data, and are not reported.

Exit status: 0 nothing found; 1 leftovers found (each named); 2 nothing to audit (a missing or
empty state, no database, nothing forgotten yet) or bad input.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unlearnrec.errors import ConfigError
from unlearnrec.serve.scan import TEXT_PROBE, IdSpace, check_pairs, json_pairs, tensor_pairs, text_pairs

log = logging.getLogger(__name__)

_MAX_SHOWN = 20


class AuditError(ConfigError):
    """Nothing to audit (missing/empty state, no database, nothing forgotten): exit status 2."""


@dataclass(frozen=True)
class Finding:
    """One place holding forgotten data: ``where`` (a path relative to the state, or
    ``database:<table>[...]``) and ``what``."""

    where: str
    what: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what}"


@dataclass
class AuditReport:
    findings: list[Finding] = field(default_factory=list)
    files: int = 0
    checkpoints: int = 0
    rows: int = 0
    forgotten: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "findings": [{"where": f.where, "what": f.what} for f in self.findings],
            "files": self.files,
            "checkpoints": self.checkpoints,
            "rows": self.rows,
            "forgotten": self.forgotten,
            "notes": self.notes,
        }


# ---------------------------------------------------------------------------- files
def _load_arrays(path: Path) -> dict[str, np.ndarray]:
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        return load_file(str(path))
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    return {"array": np.load(path, allow_pickle=False)}


def _node_rows(name: str, a: np.ndarray, fs, space: IdSpace | None, masks) -> str | None:
    """A finding text if ``a`` is a layer-0 table (e0 / h0) with nonzero rows of forgotten nodes."""
    if space is None or name not in ("e0", "h0") or a.ndim != 2:
        return None
    nu, ni = space.num_users, space.num_items
    if a.shape[0] != nu + ni:
        return None
    um, im = masks()
    rows = np.concatenate([np.flatnonzero(um), nu + np.flatnonzero(im)])
    if not len(rows):
        return None
    live = np.abs(a[rows]).sum(axis=1) != 0
    if not live.any():
        return None
    nus = int((rows[live] < nu).sum())
    return f"'{name}' keeps nonzero rows of {nus} forgotten users and {int(live.sum()) - nus} forgotten items"


def scan_file(path: Path, rel: str, fs, space: IdSpace | None, masks, report: AuditReport) -> None:
    """Add the findings of one file to ``report``."""
    suffix = path.suffix.lower()
    report.files += 1
    if suffix in (".safetensors", ".npz", ".npy"):
        try:
            arrays = _load_arrays(path)
        except Exception as e:
            report.findings.append(
                Finding(rel, f"unreadable array file ({e.__class__.__name__}); cannot prove it clean")
            )
            return
        report.checkpoints += 1
        for name, us, its in tensor_pairs(arrays):
            n = int(fs.hits(us, its).sum())
            if n:
                report.findings.append(Finding(rel, f"{n} interactions of forgotten data in '{name}'"))
        for name, a in arrays.items():
            t = _node_rows(name, a, fs, space, masks)
            if t:
                report.findings.append(Finding(rel, t))
        return
    raw = path.read_bytes()
    if b"\x00" in raw[:TEXT_PROBE]:
        report.notes.append(f"{rel}: binary file of unknown format, not scanned")
        return
    textv = raw.decode("utf-8", errors="replace")
    if textv.lstrip()[:1] in ("{", "["):  # a JSON document (whatever its name): its structure
        try:
            pairs = json_pairs(json.loads(textv))
        except json.JSONDecodeError:
            pairs = None
        if pairs is not None:
            n = int(check_pairs(fs, pairs, space).sum())
            if n:
                report.findings.append(Finding(rel, f"{n} forgotten (user, item) pairs in its JSON"))
            return
    lines = textv.splitlines()
    cands: list[tuple[int, int]] = []
    where: list[int] = []
    for ln, line in enumerate(lines, 1):
        ps = text_pairs(line)
        if suffix == ".jsonl" or (line.startswith("{") and line.rstrip().endswith("}")):
            try:
                ps = ps + json_pairs(json.loads(line))
            except json.JSONDecodeError:
                pass
        cands.extend(ps)
        where.extend([ln] * len(ps))
    hit = check_pairs(fs, cands, space)
    if hit.any():
        bad = sorted({where[k] for k in np.flatnonzero(hit)})
        shown = ", ".join(str(x) for x in bad[:_MAX_SHOWN])
        more = f" (and {len(bad) - _MAX_SHOWN} more)" if len(bad) > _MAX_SHOWN else ""
        report.findings.append(
            Finding(rel, f"{len(bad)} lines name a forgotten (user, item) pair: line {shown}{more}")
        )


# ---------------------------------------------------------------------------- database
def scan_database(store, fs, space: IdSpace | None, report: AuditReport) -> None:
    from sqlalchemy import select

    from unlearnrec.serve.retention import HASHED, is_purged
    from unlearnrec.serve.store import HONOURED, deletions, ledger, new_interactions

    with store.engine.connect() as c:
        rows = list(c.execute(select(deletions).where(deletions.c.status.in_(HONOURED))))
        news = list(c.execute(select(new_interactions)))
        entries = list(c.execute(select(ledger.c.seq, ledger.c.entry)))
    report.rows += len(rows) + len(news) + len(entries)
    raw = [r for r in rows if not is_purged(json.loads(r.payload))]
    for r in raw[:_MAX_SHOWN]:
        report.findings.append(
            Finding(
                f"database:deletions[id={r.id}]",
                f"raw ids of an applied {r.kind} request (not yet removed by a compaction)",
            )
        )
    if len(raw) > _MAX_SHOWN:
        report.findings.append(
            Finding(
                "database:deletions", f"... and {len(raw) - _MAX_SHOWN} more applied requests with raw ids"
            )
        )
    for r in rows:
        if not is_purged(json.loads(r.payload)):
            continue
        if not str(r.body_hash).startswith(HASHED):
            report.findings.append(
                Finding(f"database:deletions[id={r.id}]", "unsalted hash of the request body (of raw ids)")
            )
        key = r.idempotency_key
        if key is not None and not str(key).startswith(HASHED):
            if check_pairs(fs, text_pairs(key), space).any():
                report.findings.append(
                    Finding(f"database:deletions[id={r.id}]", "its Idempotency-Key names a forgotten pair")
                )
    if news:
        us = np.asarray([n.user for n in news], np.int64)
        its = np.asarray([n.item for n in news], np.int64)
        hit = fs.hits(us, its)
        for k in np.flatnonzero(hit)[:_MAX_SHOWN]:
            report.findings.append(
                Finding(f"database:new_interactions[id={news[k].id}]", "an interaction of forgotten data")
            )
    for seq, entry in entries:
        pairs = json_pairs(json.loads(entry))
        if pairs and check_pairs(fs, pairs, space).any():
            report.findings.append(Finding(f"database:ledger[seq={seq}]", "the entry holds a forgotten pair"))


# ---------------------------------------------------------------------------- the audit
def _id_space(store, state: Path, data_dir) -> IdSpace | None:
    from unlearnrec.serve.retention import ID_SPACE_KEY

    v = store.get_meta(ID_SPACE_KEY)
    dataset = None
    metas = sorted(state.rglob("meta.json"))
    for m in metas:
        try:
            meta = json.loads(m.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if meta.get("kind") == "model":
            v = v or f"{meta['num_users']},{meta['num_items']}"
            dataset = dataset or (meta.get("dataset"), meta.get("split") or {})
    if not v:
        return None
    nu, ni = (int(x) for x in v.split(","))
    space = IdSpace(nu, ni)
    if dataset and dataset[0]:
        try:
            from unlearnrec.data.datasets import load_dataset

            split = dataset[1]
            data = load_dataset(
                dataset[0], data_dir, val_ratio=split.get("val_ratio", 0.1), seed=split.get("seed", 0)
            )
            ru, ri = data.meta.get("user_ids"), data.meta.get("item_ids")
            if ru is not None and ri is not None and len(ru) == nu and len(ri) == ni:
                space.raw_users = {str(r): k for k, r in enumerate(np.asarray(ru).tolist())}
                space.raw_items = {str(r): k for k, r in enumerate(np.asarray(ri).tolist())}
        except Exception as e:  # the dataset is optional: text is then read as internal ids
            log.info("audit: dataset %s not loaded (%s); raw ids not checked", dataset[0], e)
    return space


def audit(state_dir: str | os.PathLike, db_url: str | None = None, data_dir=None) -> AuditReport:
    """Scan ``state_dir`` and the database; raise :class:`AuditError` when there is nothing to
    audit (never a pass on nothing)."""
    from unlearnrec.serve.retention import SALT_KEY, Fingerprints, forgotten_set
    from unlearnrec.serve.service import DB_FILE
    from unlearnrec.serve.store import Store, StoreError

    state = Path(state_dir)
    if not state.is_dir():
        raise AuditError(f"{state}: no such state directory")
    if not any(state.iterdir()):
        raise AuditError(f"{state}: the state directory is empty: nothing to audit")
    if db_url is None:
        db = state / DB_FILE
        if not db.is_file():
            raise AuditError(f"{state}: no service database ({DB_FILE}); pass --db URL if it is elsewhere")
        db_url = f"sqlite:///{db.resolve()}"
    try:
        store = Store.open(db_url, create=False)
    except StoreError as e:
        raise AuditError(str(e)) from None
    try:
        salt = store.get_meta(SALT_KEY)
        if salt is None:
            raise AuditError("the database has no fingerprint salt: no service with retention ran on it")
        fps = Fingerprints(bytes.fromhex(salt))
        fs = forgotten_set(store, fps)
        if fs.requests == 0 and not len(fs):
            raise AuditError("nothing has been forgotten yet (no applied deletion request): nothing to audit")
        space = _id_space(store, state, data_dir)
        report = AuditReport(
            forgotten={
                "requests": fs.requests,
                "edge_fingerprints": len(fs.edges),
                "users": len(fs.users),
                "items": len(fs.items),
            }
        )
        if space is None:
            report.notes.append("id space unknown: embedding rows not checked")
        elif space.raw_users is None:
            report.notes.append(
                "raw ids unknown (the dataset has none or did not load): text checked for model ids only"
            )
        cache: dict[str, Any] = {}

        def masks():
            if "m" not in cache:
                cache["m"] = (fs.user_mask(space.num_users), fs.item_mask(space.num_items))
            return cache["m"]

        skip = set()
        if db_url.startswith("sqlite:///"):
            dbp = Path(db_url[len("sqlite:///") :]).resolve()
            skip = {dbp, Path(f"{dbp}-wal"), Path(f"{dbp}-shm"), Path(f"{dbp}-journal")}
        for path in sorted(p for p in state.rglob("*") if p.is_file() or p.is_symlink()):
            if path.resolve() in skip:
                continue
            rel = str(path.relative_to(state))
            if path.is_symlink():
                report.notes.append(f"{rel}: a symbolic link, not followed")
                continue
            scan_file(path, rel, fs, space, masks, report)
        scan_database(store, fs, space, report)
        if report.checkpoints == 0:
            raise AuditError(f"{state}: no model checkpoint found: nothing to audit")
        return report
    finally:
        store.close()


def cmd_audit(args) -> int:
    """``unlearnrec serve audit --state DIR [--db URL] [--data-dir DIR] [--json]``."""
    import sys

    if not args.state:
        raise ConfigError("'serve audit' needs --state DIR")
    report = audit(args.state, args.db, getattr(args, "data_dir", None))
    if args.json:
        print(json.dumps(report.as_dict()))
    else:
        for f in report.findings:
            print(f"LEFTOVER {f}")
        for n in report.notes:
            print(f"note: {n}", file=sys.stderr)
        fz = report.forgotten
        summary = (
            f"{report.files} files ({report.checkpoints} checkpoints) and {report.rows} database rows "
            f"scanned for {fz['requests']} applied requests ({fz['edge_fingerprints']} edges, "
            f"{fz['users']} users, {fz['items']} items)"
        )
        if report.ok:
            print(f"audit passed: no forgotten data found; {summary}")
        else:
            print(f"audit FAILED: {len(report.findings)} places hold forgotten data; {summary}")
    return 0 if report.ok else 1
