"""Named datasets and file-format loaders. Data lives outside the repository (see ``data_dir``)."""

from __future__ import annotations

import gzip
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from unlearnrec.data.interactions import Interactions
from unlearnrec.data.splits import check_disjoint, holdout, split_fractions
from unlearnrec.errors import DataError

ENV_VAR = "UNLEARNREC_DATA"


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """Where datasets live: ``explicit`` (``--data-dir``), else ``$UNLEARNREC_DATA``, else
    ``~/.cache/unlearnrec/data``."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "unlearnrec" / "data"


def open_text(path: Path, encoding: str = "utf-8") -> io.TextIOBase:
    """Open a plain or gzip text file (chosen by the ``.gz`` suffix)."""
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding=encoding, errors="strict")
    return path.open("r", encoding=encoding)


def find_file(folder: Path, stem: str) -> Path:
    """``folder/stem.gz`` or ``folder/stem``, whichever exists."""
    for p in (folder / f"{stem}.gz", folder / stem):
        if p.is_file():
            return p
    raise DataError(f"file not found: {folder / stem}[.gz] (set --data-dir or ${ENV_VAR}, "
                    f"or run 'unlearnrec data download')")


def read_adjacency_list(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """LightGCN format: one line per user, ``user item item ...``; returns (users, items) arrays.

    A line with only a user id (no items) is allowed; a non-integer or negative token is an error
    naming the file and line.
    """
    us: list[np.ndarray] = []
    its: list[np.ndarray] = []
    with open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            s = line.strip()
            if not s:
                continue
            try:
                vals = np.array(s.split(), dtype=np.int64)
            except ValueError:
                raise DataError(f"{path}:{lineno}: malformed line (expected integer ids): {s[:60]!r}") from None
            if vals.min() < 0:
                raise DataError(f"{path}:{lineno}: negative id")
            if len(vals) > 1:
                us.append(np.full(len(vals) - 1, vals[0], dtype=np.int64))
                its.append(vals[1:])
    if not us:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(us), np.concatenate(its)


@dataclass(frozen=True)
class Dataset:
    """A dataset's splits over one id space: train (with validation carved out), val, test."""

    name: str
    train: Interactions
    val: Interactions
    test: Interactions
    meta: dict = field(default_factory=dict)

    @property
    def num_users(self) -> int:
        return self.train.num_users

    @property
    def num_items(self) -> int:
        return self.train.num_items

    @property
    def full_train(self) -> Interactions:
        """train ∪ val: the training interactions as shipped (before the validation carve-out)."""
        return self.train.union(self.val)

    def stats(self) -> dict:
        return {
            "name": self.name,
            "users": self.num_users,
            "items": self.num_items,
            "interactions": len(self.train) + len(self.val) + len(self.test),
            "train": len(self.train),
            "val": len(self.val),
            "test": len(self.test),
        }


def _lightgcn_dir(folder: Path) -> tuple[Interactions, Interactions]:
    tu, ti = read_adjacency_list(find_file(folder, "train.txt"))
    su, si = read_adjacency_list(find_file(folder, "test.txt"))
    if len(tu) == 0:
        raise DataError(f"{folder}: empty training file")
    nu = int(max(tu.max(), su.max() if len(su) else 0)) + 1
    ni = int(max(ti.max(), si.max() if len(si) else 0)) + 1
    try:
        train = Interactions.from_pairs(tu, ti, nu, ni)
        test = Interactions.from_pairs(su, si, nu, ni)
    except DataError as e:
        raise DataError(f"{folder}: {e}") from None
    return train, test


def read_udata(path: Path) -> Interactions:
    """GroupLens ``u.data``: ``user \\t item \\t rating \\t timestamp`` with 1-based ids."""
    rows = []
    with open_text(path, encoding="latin-1") as f:
        for lineno, line in enumerate(f, 1):
            s = line.strip()
            if not s:
                continue
            parts = s.split("\t")
            try:
                rows.append((int(parts[0]), int(parts[1])))
            except (ValueError, IndexError):
                raise DataError(f"{path}:{lineno}: malformed line: {s[:60]!r}") from None
    if not rows:
        raise DataError(f"{path}: empty dataset")
    a = np.array(rows, dtype=np.int64) - 1
    if a.min() < 0:
        raise DataError(f"{path}: ids must be 1-based")
    return Interactions.from_pairs(a[:, 0], a[:, 1], dedupe=True)


@dataclass(frozen=True)
class DatasetSpec:
    kind: str  # "lightgcn" (shipped train/test) or "udata" (unsplit ratings)
    description: str


DATASETS: dict[str, DatasetSpec] = {
    "ml-1m": DatasetSpec("lightgcn", "MovieLens-1M, the UnlearnRec authors' train/test split"),
    "gowalla": DatasetSpec("lightgcn", "Gowalla, the LightGCN/NGCF split"),
    "yelp2018": DatasetSpec("lightgcn", "Yelp2018, the LightGCN/NGCF split"),
    "ml-100k": DatasetSpec("udata", "MovieLens-100K ratings, split per user 70/10/20"),
}


def load_dataset(
    name: str,
    root: str | os.PathLike | None = None,
    val_ratio: float = 0.1,
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
) -> Dataset:
    """Load a named dataset from ``data_dir(root)/name``.

    Shipped train/test splits are kept; a seeded ``val_ratio`` of each user's training edges
    becomes the validation split (for early stopping; never the test set). Unsplit data is split
    per user by ``fractions`` (train/val/test). The splits are checked disjoint.
    """
    if name in DATASETS:
        folder = data_dir(root) / name
        spec = DATASETS[name]
    elif Path(name).is_dir() and any((Path(name) / f).is_file() for f in ("train.txt", "train.txt.gz")):
        folder, spec = Path(name), DatasetSpec("lightgcn", "a folder in LightGCN format")
    else:
        raise DataError(
            f"unknown dataset '{name}' (valid: {', '.join(sorted(DATASETS))}, "
            "or a folder holding train.txt and test.txt)"
        )
    if not folder.is_dir():
        raise DataError(
            f"dataset folder not found: {folder} (set --data-dir or ${ENV_VAR}, "
            f"or run 'unlearnrec data download {name}')"
        )
    if spec.kind == "lightgcn":
        full, test = _lightgcn_dir(folder)
        check_disjoint(full, test)
        train, val = holdout(full, val_ratio, seed) if val_ratio > 0 else (full, Interactions.empty(
            full.num_users, full.num_items))
    else:
        inter = read_udata(find_file(folder, "u.data"))
        train, val, test = split_fractions(inter, fractions, seed)
    check_disjoint(train, val, test)
    return Dataset(name, train, val, test, {"seed": seed, "val_ratio": val_ratio, "folder": str(folder)})
