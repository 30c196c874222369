"""Sampling deletion requests, and reading/writing request files (``user item`` per line)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from unlearnrec.data.interactions import Interactions
from unlearnrec.errors import RequestError


def sample_edges(train: Interactions, ratio: float, rng: np.random.Generator) -> Interactions:
    """A uniform random ``ratio`` of the training edges (at least one)."""
    if not 0 < ratio < 1:
        raise RequestError(f"request ratio must be in (0, 1), got {ratio}")
    n = max(1, int(round(ratio * len(train))))
    return train.subset(np.sort(rng.choice(len(train), size=n, replace=False)))


def sample_users(train: Interactions, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` random users that have at least one training edge."""
    active = np.flatnonzero(train.user_degrees() > 0)
    if count > len(active):
        raise RequestError(f"cannot sample {count} users: only {len(active)} have interactions")
    return np.sort(rng.choice(active, size=count, replace=False))


def read_edges_file(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(users, items) from a file of ``user item`` pairs: whitespace-, tab- or comma-separated;
    an optional header line ``user,item`` (or ``user item``) and ``#`` comments are skipped.
    Malformed lines and empty files are :class:`RequestError` naming file and line."""
    p = Path(path)
    if not p.is_file():
        raise RequestError(f"request file not found: {p}")
    us, its = [], []
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise RequestError(f"{p}: not a text file of 'user item' lines ({e.reason})") from None
    for n, line in enumerate(text.splitlines(), 1):
        s = line.split("#", 1)[0].strip()
        if not s:
            continue
        parts = s.replace(",", " ").split()
        if not us and parts[:2] == ["user", "item"]:
            continue
        if len(parts) != 2:
            raise RequestError(f"{p}:{n}: expected 'user item', got {s[:60]!r}")
        try:
            us.append(int(parts[0]))
            its.append(int(parts[1]))
        except ValueError:
            raise RequestError(f"{p}:{n}: ids must be integers, got {s[:60]!r}") from None
        if max(abs(us[-1]), abs(its[-1])) >= 2**62:
            raise RequestError(f"{p}:{n}: id out of range, got {s[:60]!r}")
    if not us:
        raise RequestError(f"{p}: empty request file (no edges)")
    return np.asarray(us, dtype=np.int64), np.asarray(its, dtype=np.int64)


def write_edges_file(edges: Interactions, path: str | os.PathLike) -> None:
    """Write ``user\\titem`` lines with a header, atomically."""
    from unlearnrec.io.checkpoint import atomic_write_text

    body = "".join(f"{u}\t{i}\n" for u, i in zip(edges.users.tolist(), edges.items.tolist(), strict=True))
    atomic_write_text(path, "user\titem\n" + body)
