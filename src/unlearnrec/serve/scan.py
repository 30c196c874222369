"""Finding (user, item) pairs in stored data: the scanner shared by the audit and the purge.

``fs`` below is a :class:`~unlearnrec.serve.retention.ForgottenSet` (anything with ``hits(users,
items) -> bool array``). Text is read line by line: adjacent integers are candidate pairs, read as
model ids and, where the dataset's raw ids are known (:class:`IdSpace`), as raw ids.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

_INT = re.compile(r"-?\d+")
TEXT_PROBE = 8192


@dataclass
class IdSpace:
    """The id space (``num_users``, ``num_items``) and, where known, raw id -> internal id maps."""

    num_users: int
    num_items: int
    raw_users: dict[str, int] | None = None
    raw_items: dict[str, int] | None = None


# ---------------------------------------------------------------------------- pair extraction
def _is_int_vec(a: np.ndarray) -> bool:
    return a.ndim == 1 and a.dtype.kind in "iu"


def tensor_pairs(tensors: dict[str, np.ndarray]) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(name, users, items) of every interaction list among named arrays."""
    for name, a in tensors.items():
        if name.endswith("users") and _is_int_vec(a):
            other = name[: -len("users")] + "items"
            b = tensors.get(other)
            if b is not None and _is_int_vec(b) and len(b) == len(a) and not name.startswith("forgotten"):
                yield f"{name}/{other}", a.astype(np.int64), b.astype(np.int64)
        elif a.ndim == 2 and a.shape[1] == 2 and a.dtype.kind in "iu":
            yield name, a[:, 0].astype(np.int64), a[:, 1].astype(np.int64)


def json_pairs(obj: Any) -> list[tuple[int, int]]:
    """Every (a, b) integer pair a JSON value holds as ``[a, b]`` in a list of pairs,
    ``{"users": [...], "items": [...]}`` or ``{"user": a, "item": b}``."""
    out: list[tuple[int, int]] = []
    stack = [obj]
    while stack:
        o = stack.pop()
        if isinstance(o, dict):
            us, its = o.get("users"), o.get("items")
            if isinstance(us, list) and isinstance(its, list) and len(us) == len(its):
                if all(_intlike(x) for x in us) and all(_intlike(x) for x in its):
                    out.extend((int(a), int(b)) for a, b in zip(us, its, strict=True))
            if _intlike(o.get("user")) and _intlike(o.get("item")):
                out.append((int(o["user"]), int(o["item"])))
            stack.extend(o.values())
        elif isinstance(o, list):
            if o and all(isinstance(p, list) and len(p) == 2 and all(map(_intlike, p)) for p in o):
                out.extend((int(p[0]), int(p[1])) for p in o)
            else:
                stack.extend(o)
    return out


def _intlike(x: Any) -> bool:
    if isinstance(x, bool):
        return False
    if isinstance(x, int):
        return True
    return isinstance(x, str) and x.strip().lstrip("-").isdigit()


def text_pairs(line: str) -> list[tuple[int, int]]:
    """Adjacent integers of a text line, as candidate pairs."""
    nums = [int(m) for m in _INT.findall(line)]
    return list(zip(nums, nums[1:], strict=False))


def check_pairs(fs, pairs: list[tuple[Any, Any]], space: IdSpace | None) -> np.ndarray:
    """(n,) bool: which candidate pairs name forgotten data, read as internal or raw ids."""
    n = len(pairs)
    hit = np.zeros(n, bool)
    if not n:
        return hit
    a = np.fromiter((int(p[0]) for p in pairs), np.int64, n)
    b = np.fromiter((int(p[1]) for p in pairs), np.int64, n)
    ok = np.ones(n, bool)
    if space is not None:
        ok = (a >= 0) & (a < space.num_users) & (b >= 0) & (b < space.num_items)
    idx = np.flatnonzero(ok)
    if len(idx):
        hit[idx] |= fs.hits(a[idx], b[idx])
    if space is not None and space.raw_users is not None and space.raw_items is not None:
        ru, ri = space.raw_users, space.raw_items
        mu = np.fromiter((ru.get(str(int(x)), -1) for x in a), np.int64, n)
        mi = np.fromiter((ri.get(str(int(x)), -1) for x in b), np.int64, n)
        idx = np.flatnonzero((mu >= 0) & (mi >= 0))
        if len(idx):
            hit[idx] |= fs.hits(mu[idx], mi[idx])
    return hit


def redact_logs(logs_dir: Path, fs, id_space: tuple[int, int] | None) -> int:
    """Drop the lines of every file under ``logs_dir`` that name forgotten data (atomic
    rewrite per file); returns how many lines were removed."""
    from unlearnrec.io.checkpoint import atomic_write_text

    if not logs_dir.is_dir() or not len(fs):
        return 0
    space = IdSpace(*id_space) if id_space else None
    dropped = 0
    for path in sorted(p for p in logs_dir.rglob("*") if p.is_file()):
        raw = path.read_bytes()
        if b"\x00" in raw[:TEXT_PROBE]:
            continue
        lines = raw.decode("utf-8", errors="replace").splitlines(keepends=True)
        keep = []
        for line in lines:
            if check_pairs(fs, text_pairs(line), space).any():
                dropped += 1
            else:
                keep.append(line)
        if len(keep) != len(lines):
            atomic_write_text(path, "".join(keep))
    return dropped
