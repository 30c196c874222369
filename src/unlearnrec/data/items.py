"""Item metadata for display: the raw id and, where the dataset ships one, the title of every item.

Recommendations are computed over contiguous item indices; a person reads raw ids and titles.
:func:`item_metadata` finds what a dataset folder offers:

- raw ids: ``Dataset.meta["item_ids"]`` (LightGCN ``item_list.txt`` of Gowalla / Yelp2018, or
  the ids of a file with raw ids such as ``u.data`` / ``ratings.dat`` / CSV);
- ML-1M in the UnlearnRec split (``train.txt`` + ``movies.dat``): the item index is the position
  of the MovieID among the *rated* movies in ascending order (3,706 of the 3,883 in
  ``movies.dat``), so the mapping needs ``ratings.dat`` beside it, or a ``movies.dat`` listing
  exactly as many movies as the dataset has items; otherwise the raw ids stay unknown (and say so);
- titles: ``movies.dat`` (ML-1M, ``MovieID::Title::Genres``) or ``u.item`` (ML-100K,
  ``id|title|...``), both Latin-1, looked up by raw id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from unlearnrec.data.formats import find_file, iter_lines
from unlearnrec.errors import DataError


@dataclass(frozen=True)
class ItemInfo:
    """Raw id (``raw_ids[index]``, None when unknown) and title (by raw id) of the items."""

    raw_ids: np.ndarray | None = None
    titles: dict[str, str] = field(default_factory=dict)
    sources: tuple[str, ...] = ()
    note: str = ""

    def raw(self, index: int) -> str | None:
        """The raw id of item ``index`` as text, or None."""
        if self.raw_ids is None or not 0 <= index < len(self.raw_ids):
            return None
        return str(self.raw_ids[index])

    def title(self, index: int) -> str | None:
        """The title of item ``index``, or None."""
        raw = self.raw(index)
        return self.titles.get(raw) if raw is not None else None

    def label(self, index: int) -> str:
        """``item 12 (raw 1193: One Flew Over the Cuckoo's Nest (1975))`` or just ``item 12``."""
        raw, title = self.raw(index), self.title(index)
        if raw is None:
            return f"item {index}"
        return f"item {index} (raw {raw}: {title})" if title else f"item {index} (raw {raw})"


def _optional(folder: Path, stem: str) -> Path | None:
    try:
        return find_file(folder, stem)
    except DataError:
        return None


def read_titles(path: Path, sep: str) -> dict[str, str]:
    """{raw id: title} of ``movies.dat`` (``sep="::"``) or ``u.item`` (``sep="|"``), Latin-1."""
    out: dict[str, str] = {}
    for lineno, line in iter_lines(path, encoding="latin-1"):
        parts = line.rstrip("\r\n").split(sep)
        if len(parts) < 2 or not parts[0].strip():
            if line.strip():
                raise DataError(f"{path}:{lineno}: malformed line (expected 'id{sep}title{sep}...')")
            continue
        out[parts[0].strip()] = parts[1].strip()
    return out


def _rated_movies(path: Path) -> np.ndarray:
    """Sorted unique MovieIDs of ML-1M ``ratings.dat`` (``UserID::MovieID::Rating::Timestamp``)."""
    ids = set()
    for lineno, line in iter_lines(path, encoding="latin-1"):
        parts = line.split("::")
        if len(parts) < 2:
            if line.strip():
                raise DataError(f"{path}:{lineno}: malformed line (expected 'user::movie::...')")
            continue
        ids.add(int(parts[1]))
    return np.asarray(sorted(ids), dtype=np.int64)


def item_metadata(folder: str | Path | None, num_items: int, item_ids=None) -> ItemInfo:
    """What ``folder`` tells about the ``num_items`` items (``item_ids``: raw ids the loader found).

    Display only: a malformed or unreadable metadata file leaves the items as bare indices and
    says why in ``note``; it never makes the command that displays them fail.
    """
    try:
        return _item_metadata(folder, num_items, item_ids)
    except (DataError, OSError, ValueError) as e:
        return ItemInfo(note=f"no item metadata: {e}")


def _item_metadata(folder: str | Path | None, num_items: int, item_ids=None) -> ItemInfo:
    if folder is None or not Path(folder).is_dir():
        return ItemInfo(note="no dataset folder")
    folder = Path(folder)
    raw = None
    sources: list[str] = []
    note = ""
    if item_ids is not None and len(item_ids) == num_items:
        raw = np.asarray(item_ids)
        sources.append("raw ids from the dataset files")
    movies, uitem = _optional(folder, "movies.dat"), _optional(folder, "u.item")
    titles: dict[str, str] = {}
    if movies is not None:
        titles = read_titles(movies, "::")
        if raw is None:
            ratings = _optional(folder, "ratings.dat")
            if ratings is not None:
                rated = _rated_movies(ratings)
                if len(rated) == num_items:
                    raw = rated
                    sources.append(f"MovieIDs from {ratings.name} (rated movies in ascending order)")
            elif len(titles) == num_items:
                raw = np.asarray(sorted(int(k) for k in titles), dtype=np.int64)
                sources.append(f"MovieIDs from {movies.name} (ascending)")
            if raw is None:
                note = (
                    f"raw MovieIDs unknown: the item index is the position among the rated movies, "
                    f"which needs ratings.dat beside {movies.name}; no titles"
                )
            else:
                sources.append(f"titles from {movies.name}")
    elif uitem is not None:
        titles = read_titles(uitem, "|")
        sources.append(f"titles from {uitem.name}")
    return ItemInfo(raw, titles, tuple(sources), note)
