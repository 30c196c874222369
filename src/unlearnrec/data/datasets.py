"""Named datasets and file-format loaders. Data lives outside the repository (see ``data_dir``)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from unlearnrec.data.formats import (
    ENV_VAR,
    FORMATS,
    LoadedInteractions,
    find_file,
    load_interactions,
    open_text,
    read_adjacency_list,
    read_coo_interactions,
    read_id_list,
    read_udata,
)
from unlearnrec.data.interactions import Interactions
from unlearnrec.data.splits import check_disjoint, holdout, split_fractions
from unlearnrec.errors import DataError

__all__ = [
    "DATASETS",
    "ENV_VAR",
    "FORMATS",
    "Dataset",
    "DatasetSpec",
    "LoadedInteractions",
    "data_dir",
    "find_file",
    "load_dataset",
    "load_interactions",
    "open_text",
    "read_adjacency_list",
    "read_udata",
]

log = logging.getLogger(__name__)


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """Where datasets live: ``explicit`` (``--data-dir``), else ``$UNLEARNREC_DATA``, else
    ``~/.cache/unlearnrec/data``."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "unlearnrec" / "data"


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
        """Counts per split. ``shipped_train`` = train + val (the training file before the
        validation carve-out); ``split`` says whether train/test were shipped or drawn here."""
        return {
            "name": self.name,
            "users": self.num_users,
            "items": self.num_items,
            "interactions": len(self.train) + len(self.val) + len(self.test),
            "train": len(self.train),
            "val": len(self.val),
            "test": len(self.test),
            "shipped_train": len(self.train) + len(self.val),
            "split": self.meta.get("split", "shipped"),
        }


def _lightgcn_dir(folder: Path) -> tuple[Interactions, Interactions, dict]:
    """``train.txt`` + ``test.txt`` (plain or gz) of a LightGCN-format folder.

    The id space is given by ``user_list.txt`` / ``item_list.txt`` where present (an id beyond
    them is an error naming file and line), else max id + 1 over both files.
    """
    meta: dict = {}
    nu = ni = None
    for kind in ("user", "item"):
        try:
            lst = find_file(folder, f"{kind}_list.txt")
        except DataError:
            continue
        ids = read_id_list(lst)
        meta[f"{kind}_ids"] = ids
        if kind == "user":
            nu = len(ids)
        else:
            ni = len(ids)
    tu, ti = read_adjacency_list(find_file(folder, "train.txt"), nu, ni)
    su, si = read_adjacency_list(find_file(folder, "test.txt"), nu, ni)
    if len(tu) == 0:
        raise DataError(f"{find_file(folder, 'train.txt')}: empty dataset (no training interactions)")
    if len(su) == 0:
        raise DataError(f"{find_file(folder, 'test.txt')}: empty dataset (no test interactions)")
    nu = nu if nu is not None else int(max(tu.max(), su.max())) + 1
    ni = ni if ni is not None else int(max(ti.max(), si.max())) + 1
    train = Interactions.from_pairs(tu, ti, nu, ni)
    test = Interactions.from_pairs(su, si, nu, ni)
    shared = train.intersects(test)
    if shared:
        raise DataError(f"{folder}: train and test files share {shared} interactions")
    return train, test, meta


# the UnlearnRec authors' and SSLRec's layout: one pickled scipy COO matrix (users x items) per split
PICKLE_SPLITS = (
    {"train": "trnMat.pkl", "val": "valMat.pkl", "test": "tstMat.pkl"},
    {"train": "trn_mat.pkl", "val": "val_mat.pkl", "test": "tst_mat.pkl"},
)


def _pickle_split_files(folder: Path) -> dict[str, Path] | None:
    """{split: file} of a folder in the pickled-matrix layout (train and test required), or None."""
    for names in PICKLE_SPLITS:
        found = {}
        for split, stem in names.items():
            try:
                found[split] = find_file(folder, stem)
            except DataError:
                continue
        if "train" in found and "test" in found:
            return found
    return None


def _pickle_dir(folder: Path) -> tuple[Interactions, Interactions | None, Interactions, dict]:
    """(train, shipped val or None, test, meta) of a folder of pickled COO matrices.

    Each file goes through the restricted unpickler (:func:`read_coo_interactions`): a pickle that
    references anything but numpy arrays and a scipy COO matrix is refused. The matrices must share
    one shape (the id space) and the splits must be disjoint.
    """
    files = _pickle_split_files(folder)
    if files is None:
        raise DataError(f"{folder}: no trnMat.pkl + tstMat.pkl (or trn_mat.pkl + tst_mat.pkl)")
    mats = {split: read_coo_interactions(path) for split, path in files.items()}
    shapes = {split: (m.num_users, m.num_items) for split, m in mats.items()}
    if len(set(shapes.values())) > 1:
        detail = ", ".join(f"{files[k].name} {v[0]}x{v[1]}" for k, v in shapes.items())
        raise DataError(f"{folder}: the split matrices have different shapes ({detail})")
    meta = {"files": {k: str(v) for k, v in files.items()}}
    return mats["train"], mats.get("val"), mats["test"], meta


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

# a folder without a shipped split holds one of these (first match wins)
_FOLDER_FILES = (("u.data", "udata"), ("ratings.dat", "dat"), ("ratings.csv", "csv"))


def _resolve(name: str, root) -> tuple[Path, str]:
    """(path, kind) of a named dataset, a dataset folder or a single interaction file."""
    if name in DATASETS:
        folder = data_dir(root) / name
        if not folder.is_dir():
            raise DataError(
                f"dataset folder not found: {folder} (set --data-dir or ${ENV_VAR}, "
                f"or run 'unlearnrec data download {name}')"
            )
        kind = DATASETS[name].kind
        has_txt = any((folder / f).is_file() for f in ("train.txt", "train.txt.gz"))
        if kind == "lightgcn" and not has_txt and _pickle_split_files(folder) is not None:
            kind = "pickle"
        return folder, kind
    p = Path(name).expanduser()
    if p.is_file():
        return p, "file"
    if p.is_dir():
        if any((p / f).is_file() for f in ("train.txt", "train.txt.gz")):
            return p, "lightgcn"
        if _pickle_split_files(p) is not None:
            return p, "pickle"
        for stem, _fmt in _FOLDER_FILES:
            for f in (p / stem, p / f"{stem}.gz"):
                if f.is_file():
                    return f, "file"
        inters = sorted(p.glob("*.inter")) + sorted(p.glob("*.inter.gz"))
        if len(inters) == 1:
            return inters[0], "file"
        raise DataError(
            f"{p}: no dataset files found (expected train.txt + test.txt, trnMat.pkl + tstMat.pkl, "
            "u.data, ratings.dat, ratings.csv or one .inter file)"
        )
    raise DataError(
        f"unknown dataset '{name}' (valid: {', '.join(sorted(DATASETS))}, "
        "or a path to a dataset folder or interaction file)"
    )


def load_dataset(
    name: str,
    root: str | os.PathLike | None = None,
    val_ratio: float = 0.1,
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
) -> Dataset:
    """Load a named dataset from ``data_dir(root)/name``, or a dataset folder / file by path.

    Shipped train/test splits are kept (LightGCN ``train.txt`` / ``test.txt``, or the UnlearnRec
    authors' and SSLRec's pickled matrices ``trnMat.pkl`` / ``valMat.pkl`` / ``tstMat.pkl`` or
    ``trn_mat.pkl`` / ``tst_mat.pkl``, plain or ``.gz``, read by a restricted unpickler; a shipped
    validation matrix is the validation split as it is); otherwise a seeded ``val_ratio`` of each
    user's training edges becomes the validation split (for early stopping; never the test set).
    Unsplit data (GroupLens
    ``u.data``, ``ratings.dat``, CSV/TSV, RecBole ``.inter``, pickled COO) is split per user by
    ``fractions`` (train/val/test), each user keeping at least one training edge. The splits are
    checked disjoint. Files with raw ids are remapped to contiguous ids; ``meta["user_ids"]`` /
    ``meta["item_ids"]`` hold the raw id of every index where the data has them.
    """
    if not 0.0 <= float(val_ratio) < 1.0:
        raise DataError(f"val_ratio must be in [0, 1), got {val_ratio}")
    if len(fractions) != 3:
        raise DataError(f"fractions must be (train, val, test), got {tuple(fractions)}")
    path, kind = _resolve(name, root)
    meta: dict = {"seed": seed, "val_ratio": val_ratio, "folder": str(path if path.is_dir() else path.parent)}
    if kind == "lightgcn":
        full, test, extra = _lightgcn_dir(path)
        meta.update(extra, split="shipped", format="lightgcn")
        if val_ratio > 0:
            train, val = holdout(full, val_ratio, seed)
        else:
            train, val = full, Interactions.empty(full.num_users, full.num_items)
    elif kind == "pickle":
        full, shipped_val, test, extra = _pickle_dir(path)
        meta.update(extra, split="shipped", format="coo-pickle")
        if shipped_val is not None:
            train, val = full, shipped_val
            meta["val"] = "shipped"
        elif val_ratio > 0:
            train, val = holdout(full, val_ratio, seed)
        else:
            train, val = full, Interactions.empty(full.num_users, full.num_items)
    else:
        if kind == "udata":
            loaded = load_interactions(find_file(path, "u.data"), "udata")
        else:
            loaded = load_interactions(path)
        meta.update(
            split="per-user",
            fractions=tuple(float(f) for f in fractions),
            format=loaded.format,
            file=str(loaded.path),
            user_ids=loaded.user_ids,
            item_ids=loaded.item_ids,
        )
        train, val, test = split_fractions(loaded.interactions, fractions, seed)
    check_disjoint(train, val, test)
    log.info(
        "loaded %s: %d users, %d items, train %d / val %d / test %d",
        name,
        train.num_users,
        train.num_items,
        len(train),
        len(val),
        len(test),
    )
    return Dataset(name, train, val, test, meta)
