# long file: one reader per interaction format (ten), each small; they share the id remapping
"""File-format readers for interaction data.

Every reader reports a bad line as ``DataError("<file>:<line>: <reason>")`` (one line, no
traceback at the CLI). Formats whose ids are arbitrary tokens (``::`` files, CSV/TSV, RecBole
``.inter``) are remapped to contiguous 0-based ids; the raw id of every index is kept in the
returned :class:`LoadedInteractions` (``user_ids[u]`` is the raw id of user ``u``).

Formats (``FORMATS``):

- ``lightgcn``: ``user item item ...`` per line, 0-based ids (LightGCN/NGCF ``train.txt``);
- ``udata``: GroupLens ``u.data``, ``user \\t item \\t rating \\t timestamp``, 1-based ids;
- ``dat``: ``UserID::MovieID::Rating::Timestamp`` (MovieLens ``ratings.dat``), Latin-1;
- ``csv`` / ``tsv``: delimited text with a header row naming the user and item columns;
- ``recbole``: RecBole atomic ``.inter`` files, header ``user_id:token\\titem_id:token\\t...``;
- ``coo-pickle``: a pickled scipy COO matrix (users x items), read by a restricted unpickler
  that can only build numpy arrays and a COO matrix: it never runs code from the file.
"""

from __future__ import annotations

import csv
import gzip
import inspect
import io
import logging
import os
import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from unlearnrec.data.interactions import Interactions
from unlearnrec.errors import DataError

log = logging.getLogger(__name__)

ENV_VAR = "UNLEARNREC_DATA"


# --------------------------------------------------------------------------- text access
def open_text(path: Path, encoding: str = "utf-8") -> io.TextIOBase:
    """Open a plain or gzip text file (chosen by the ``.gz`` suffix)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding=encoding, errors="strict")
    return path.open("r", encoding=encoding)


def iter_lines(path: Path, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
    """``(line number, line)`` pairs (1-based) of a plain or gzip text file.

    Lines are decoded one at a time so that a decoding error names its line; a UTF-8 byte-order
    mark is dropped; gzip and I/O errors become a :class:`DataError`.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    lineno = 0
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb") as f:
            for lineno, raw in enumerate(f, 1):  # noqa: B007 - lineno is read in the handlers
                try:
                    line = raw.decode(encoding)
                except UnicodeDecodeError as e:
                    raise DataError(f"{path}:{lineno}: cannot decode as {encoding} ({e.reason})") from None
                if lineno == 1 and line.startswith("\ufeff"):
                    line = line[1:]
                yield lineno, line
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read ({e})") from None


def find_file(folder: Path, stem: str) -> Path:
    """``folder/stem.gz`` or ``folder/stem``, whichever exists."""
    for p in (folder / f"{stem}.gz", folder / stem):
        if p.is_file():
            return p
    raise DataError(
        f"file not found: {folder / stem}[.gz] (set --data-dir or ${ENV_VAR}, "
        f"or run 'unlearnrec data download')"
    )


def _clip(s: str) -> str:
    s = s.rstrip("\r\n")
    return repr(s if len(s) <= 60 else s[:57] + "...")


# --------------------------------------------------------------------------- results
@dataclass(frozen=True)
class LoadedInteractions:
    """Interactions read from a file, with the raw id of every contiguous index.

    ``user_ids``: shape (num_users,), ``user_ids[u]`` is the raw id of user ``u`` (sorted
    ascending: numerically when every raw id is an integer, else as strings); same for items.
    ``duplicates``: repeated (user, item) rows that were dropped (first occurrence kept).
    """

    interactions: Interactions
    user_ids: np.ndarray
    item_ids: np.ndarray
    path: Path
    format: str
    duplicates: int = 0

    def user_index(self, raw) -> int:
        """Contiguous index of a raw user id (``DataError`` if unknown)."""
        return _index_of(self.user_ids, raw, "user", self.path)

    def item_index(self, raw) -> int:
        """Contiguous index of a raw item id (``DataError`` if unknown)."""
        return _index_of(self.item_ids, raw, "item", self.path)


def _index_of(ids: np.ndarray, raw, kind: str, path: Path) -> int:
    try:
        key = np.asarray(raw, dtype=ids.dtype)
    except (ValueError, TypeError):
        raise DataError(f"{path}: unknown {kind} id {raw!r}") from None
    pos = int(np.searchsorted(ids, key))
    if pos >= len(ids) or ids[pos] != key:
        raise DataError(f"{path}: unknown {kind} id {raw!r}")
    return pos


def remap_ids(raw: list[str] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Contiguous 0-based ids for raw tokens: ``(index per row, sorted unique raw ids)``.

    Tokens that are all integers sort numerically (so MovieLens ids keep their order:
    ML-1M's item index is the rank of the MovieID among rated movies); otherwise as strings.
    Integer parsing is used only when it is lossless (``"007"`` and ``"7"`` stay distinct).
    """
    arr = np.asarray(raw, dtype=str)
    uniq_s, inv_s = np.unique(arr, return_inverse=True)
    try:
        nums = uniq_s.astype(np.int64)
    except (ValueError, OverflowError):
        return inv_s.astype(np.int64).ravel(), uniq_s
    uniq_n, inv_n = np.unique(nums, return_inverse=True)
    if len(uniq_n) != len(uniq_s):  # "7" and "007": keep them as distinct string tokens
        return inv_s.astype(np.int64).ravel(), uniq_s
    return inv_n.astype(np.int64).ravel()[inv_s.ravel()], uniq_n


def _from_raw(
    path: Path, fmt: str, raw_users: list[str], raw_items: list[str], linenos: list[int], duplicates: str
) -> LoadedInteractions:
    """Remap raw tokens, handle duplicate rows, build :class:`Interactions`."""
    if not raw_users:
        raise DataError(f"{path}: empty dataset (no interactions)")
    u, user_ids = remap_ids(raw_users)
    i, item_ids = remap_ids(raw_items)
    nu, ni = len(user_ids), len(item_ids)
    keys = u * ni + i
    _, first = np.unique(keys, return_index=True)
    ndup = len(keys) - len(first)
    if ndup:
        if duplicates == "error":
            mask = np.ones(len(keys), dtype=bool)
            mask[first] = False
            k = int(np.flatnonzero(mask)[0])
            raise DataError(
                f"{path}:{linenos[k]}: duplicate interaction (user {raw_users[k]!r}, item {raw_items[k]!r})"
            )
        log.warning("%s: dropped %d duplicate (user, item) rows", path, ndup)
        first.sort()
        u, i = u[first], i[first]
    inter = Interactions(u, i, nu, ni)
    return LoadedInteractions(inter, user_ids, item_ids, Path(path), fmt, ndup)


def _check_duplicates_arg(duplicates: str) -> None:
    if duplicates not in ("drop", "error"):
        raise DataError(f"duplicates must be 'drop' or 'error', got {duplicates!r}")


# --------------------------------------------------------------------------- LightGCN lists
def read_bytes(path: Path) -> bytes:
    """The whole content of a plain or gzip file (chosen by the ``.gz`` suffix)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read ({e})") from None


def _line_at(data: bytes, lineno: int) -> str:
    lines = data.split(b"\n")
    return _clip(lines[lineno - 1].decode("latin-1")) if 0 < lineno <= len(lines) else "''"


_MAX_DIGITS = 18  # any 18-digit decimal fits in int64


def read_adjacency_list(
    path: Path, num_users: int | None = None, num_items: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """LightGCN format: one line per user, ``user item item ...``; returns (users, items) int64 arrays
    of shape (n_edges,), in file order.

    A line with only a user id (no items) is allowed. Any character other than digits and
    whitespace (a sign, a letter, a decimal point), an id ``>= num_users`` / ``>= num_items``
    (when given) or a repeated (user, item) pair is an error naming the file and line. Parsing
    is vectorised over the bytes of the file (no Python loop over lines).
    """
    path = Path(path)
    data = read_bytes(path)
    b = np.frombuffer(data, dtype=np.uint8)
    z = np.zeros(0, np.int64)
    if len(b) == 0:
        return z, z.copy()
    digit = (b >= 48) & (b <= 57)
    newline = b == 10
    space = newline | (b == 32) | (b == 9) | (b == 13)
    bad = ~(digit | space)
    nl = np.flatnonzero(newline)

    def line_of(pos):  # 0-based line of byte positions: the number of newlines before them
        return np.searchsorted(nl, pos)

    if bad.any():
        ln = int(line_of(np.argmax(bad))) + 1
        raise DataError(
            f"{path}:{ln}: malformed line (expected non-negative integer ids): {_line_at(data, ln)}"
        )
    prev = np.concatenate([[False], digit[:-1]])
    nxt = np.concatenate([digit[1:], [False]])
    starts = np.flatnonzero(digit & ~prev)
    ends = np.flatnonzero(digit & ~nxt) + 1
    if len(starts) == 0:
        return z, z.copy()
    length = ends - starts
    if length.max() > _MAX_DIGITS:
        ln = int(line_of(starts[np.argmax(length > _MAX_DIGITS)])) + 1
        raise DataError(f"{path}:{ln}: id too large: {_line_at(data, ln)}")
    # token values: each digit times 10^(its distance from the token end), summed per token
    dpos = np.flatnonzero(digit)
    power = np.repeat(ends, length) - dpos - 1
    offsets = np.concatenate([[0], np.cumsum(length)[:-1]])
    vals = np.add.reduceat((b[dpos] - 48).astype(np.int64) * (10**power), offsets)
    tok_line = line_of(starts)
    first = np.concatenate([[True], tok_line[1:] != tok_line[:-1]])  # the user id opening each line
    owner = np.flatnonzero(first)[np.cumsum(first, dtype=np.int64) - 1]
    is_item = ~first
    users, items, lines = vals[owner[is_item]], vals[is_item], tok_line[is_item] + 1
    if num_users is not None and len(vals) and vals[first].max() >= num_users:
        k = int(np.argmax(vals[first] >= num_users))
        ln = int(tok_line[first][k]) + 1
        raise DataError(f"{path}:{ln}: user id {vals[first][k]} out of range [0, {num_users})")
    if num_items is not None and len(items) and items.max() >= num_items:
        k = int(np.argmax(items >= num_items))
        raise DataError(f"{path}:{lines[k]}: item id {items[k]} out of range [0, {num_items})")
    if len(items):
        keys = users * (int(items.max()) + 1) + items
        order = np.argsort(keys, kind="stable")
        dup = np.flatnonzero(keys[order][1:] == keys[order][:-1])
        if len(dup):
            k = int(order[dup[0] + 1])  # the later of the two equal edges
            raise DataError(f"{path}:{lines[k]}: duplicate interaction (user {users[k]}, item {items[k]})")
    return users, items


def read_id_list(path: Path) -> np.ndarray:
    """LightGCN ``user_list.txt`` / ``item_list.txt`` (header ``org_id remap_id``): the original id
    of every index, shape (n,). The ``remap_id`` column must count 0, 1, 2, ... in order."""
    path = Path(path)
    org: list[str] = []
    for lineno, line in iter_lines(path):
        parts = line.split()
        if lineno == 1 and parts == ["org_id", "remap_id"]:
            continue
        if not parts:
            continue
        if len(parts) != 2:
            raise DataError(f"{path}:{lineno}: malformed line (expected 'org_id remap_id'): {_clip(line)}")
        if parts[1] != str(len(org)):
            raise DataError(f"{path}:{lineno}: remap_id {parts[1]!r} out of order (expected {len(org)})")
        org.append(parts[0])
    ids = np.asarray(org, dtype=str)
    try:
        return ids.astype(np.int64)
    except (ValueError, OverflowError):
        return ids


# --------------------------------------------------------------------------- GroupLens
def read_udata(path: Path, num_users: int | None = None, num_items: int | None = None) -> Interactions:
    """GroupLens ``u.data``: ``user \\t item \\t rating \\t timestamp`` with 1-based ids.

    Index = id - 1 (the GroupLens ids of ML-100K are already contiguous). Every line must have
    the same number of tab-separated fields (at least two), integer ids >= 1 and, when given,
    ``<= num_users`` / ``<= num_items``. Repeated (user, item) rows are dropped with a warning.
    """
    path = Path(path)
    rows: list[tuple[int, int]] = []
    linenos: list[int] = []
    width = None
    for lineno, line in iter_lines(path, encoding="latin-1"):
        s = line.strip()
        if not s:
            continue
        parts = s.split("\t")
        if width is None:
            width = len(parts)
        if len(parts) < 2 or len(parts) != width:
            raise DataError(
                f"{path}:{lineno}: malformed line (expected {max(width, 2)} tab-separated fields, "
                f"got {len(parts)}): {_clip(s)}"
            )
        try:
            u, i = int(parts[0]), int(parts[1])
        except ValueError:
            raise DataError(f"{path}:{lineno}: malformed line (expected integer ids): {_clip(s)}") from None
        if u < 1 or i < 1:
            raise DataError(f"{path}:{lineno}: ids must be 1-based, got user {u}, item {i}")
        if num_users is not None and u > num_users:
            raise DataError(f"{path}:{lineno}: user id {u} out of range [1, {num_users}]")
        if num_items is not None and i > num_items:
            raise DataError(f"{path}:{lineno}: item id {i} out of range [1, {num_items}]")
        rows.append((u, i))
        linenos.append(lineno)
    if not rows:
        raise DataError(f"{path}: empty dataset (no interactions)")
    a = np.array(rows, dtype=np.int64) - 1
    inter = Interactions.from_pairs(a[:, 0], a[:, 1], num_users, num_items, dedupe=True)
    if len(inter) < len(a):
        log.warning("%s: dropped %d duplicate (user, item) rows", path, len(a) - len(inter))
    return inter


def read_dat(
    path: Path, sep: str = "::", encoding: str = "latin-1", duplicates: str = "drop"
) -> LoadedInteractions:
    """``::``-separated MovieLens files (``UserID::MovieID::Rating::Timestamp``, Latin-1).

    The first two fields are the user and item; every line must have the same number of fields.
    Raw ids are remapped to contiguous 0-based ids in ascending order (ML-1M: user index =
    UserID - 1, item index = rank of the MovieID among the rated movies).
    """
    _check_duplicates_arg(duplicates)
    path = Path(path)
    us: list[str] = []
    its: list[str] = []
    linenos: list[int] = []
    width = None
    for lineno, line in iter_lines(path, encoding=encoding):
        s = line.strip()
        if not s:
            continue
        parts = s.split(sep)
        if width is None:
            width = len(parts)
        if len(parts) < 2 or len(parts) != width:
            raise DataError(
                f"{path}:{lineno}: malformed line (expected {max(width, 2)} fields separated by {sep!r}, "
                f"got {len(parts)}): {_clip(s)}"
            )
        u, i = parts[0].strip(), parts[1].strip()
        if not u or not i:
            raise DataError(f"{path}:{lineno}: empty user or item id: {_clip(s)}")
        us.append(u)
        its.append(i)
        linenos.append(lineno)
    return _from_raw(path, "dat", us, its, linenos, duplicates)


# --------------------------------------------------------------------------- CSV / TSV
USER_COLUMNS = ("user_id", "userid", "user", "uid", "u", "customer_id", "reviewer_id", "reviewerid")
ITEM_COLUMNS = (
    "item_id",
    "itemid",
    "item",
    "iid",
    "i",
    "movie_id",
    "movieid",
    "business_id",
    "product_id",
    "asin",
    "track_id",
    "artist_id",
)
_DELIMITERS = ("\t", ",", ";", "|")


def sniff_delimiter(header: str, path: Path | str = "<input>") -> str:
    """The delimiter of a header line: whichever of tab, comma, semicolon, bar occurs most."""
    counts = {d: header.count(d) for d in _DELIMITERS}
    best = max(counts, key=counts.get)
    if counts[best] == 0:
        raise DataError(f"{path}:1: cannot detect the delimiter of header {_clip(header)} (pass delimiter=)")
    return best


def _pick_column(header: list[str], wanted: str | None, candidates: tuple[str, ...], kind: str, path) -> int:
    names = [h.strip() for h in header]
    if wanted is not None:
        if wanted in names:
            return names.index(wanted)
        raise DataError(f"{path}:1: no {kind} column {wanted!r} in header (columns: {', '.join(names)})")
    lower = [n.lower() for n in names]
    for c in candidates:
        if c in lower:
            return lower.index(c)
    raise DataError(f"{path}:1: no {kind} column in header (columns: {', '.join(names)}; pass {kind}_col=)")


def read_csv(
    path: Path,
    user_col: str | None = None,
    item_col: str | None = None,
    delimiter: str | None = None,
    encoding: str = "utf-8",
    duplicates: str = "drop",
) -> LoadedInteractions:
    """Delimited text with a header row (CSV, TSV, ...).

    ``user_col`` / ``item_col`` name the columns (default: the first header name, compared
    case-insensitively, among :data:`USER_COLUMNS` / :data:`ITEM_COLUMNS`); ``delimiter``
    defaults to the one sniffed from the header. Quoted fields follow the ``csv`` module rules.
    Every row must have as many fields as the header.
    """
    _check_duplicates_arg(duplicates)
    path = Path(path)
    lines = iter_lines(path, encoding=encoding)
    header_line = None
    for _lineno, line in lines:
        if line.strip():
            header_line = line
            break
    if header_line is None:
        raise DataError(f"{path}: empty file (expected a header row)")
    delim = delimiter if delimiter is not None else sniff_delimiter(header_line, path)
    header = next(csv.reader([header_line], delimiter=delim))
    ucol = _pick_column(header, user_col, USER_COLUMNS, "user", path)
    icol = _pick_column(header, item_col, ITEM_COLUMNS, "item", path)
    us: list[str] = []
    its: list[str] = []
    linenos: list[int] = []
    for lineno, line in lines:
        if not line.strip():
            continue
        try:
            row = next(csv.reader([line], delimiter=delim, strict=True))
        except csv.Error as e:
            raise DataError(f"{path}:{lineno}: malformed line ({e}): {_clip(line)}") from None
        if len(row) != len(header):
            raise DataError(
                f"{path}:{lineno}: malformed line (expected {len(header)} fields, "
                f"got {len(row)}): {_clip(line)}"
            )
        u, i = row[ucol].strip(), row[icol].strip()
        if not u or not i:
            raise DataError(f"{path}:{lineno}: empty user or item id: {_clip(line)}")
        us.append(u)
        its.append(i)
        linenos.append(lineno)
    return _from_raw(path, "csv", us, its, linenos, duplicates)


# --------------------------------------------------------------------------- RecBole
RECBOLE_TYPES = ("token", "token_seq", "float", "float_seq")


def read_recbole(
    path: Path, user_field: str = "user_id", item_field: str = "item_id", duplicates: str = "drop"
) -> LoadedInteractions:
    """RecBole atomic ``.inter`` file: tab-separated, header ``name:type`` per column (types
    ``token``, ``token_seq``, ``float``, ``float_seq``); the user and item fields must be tokens.
    ``float`` columns are checked numeric."""
    _check_duplicates_arg(duplicates)
    path = Path(path)
    lines = iter_lines(path, encoding="utf-8")
    header, hl = None, 1
    for hl, line in lines:  # noqa: B007 - hl (the header's line number) is used below
        if line.strip():
            header = line.rstrip("\r\n").split("\t")
            break
    if header is None:
        raise DataError(f"{path}: empty file (expected a 'name:type' header row)")
    names, types = [], []
    for col in header:
        name, colon, typ = col.strip().rpartition(":")
        if not colon or not name or typ not in RECBOLE_TYPES:
            raise DataError(
                f"{path}:{hl}: malformed RecBole header field {col!r} "
                f"(expected name:type with type in {', '.join(RECBOLE_TYPES)})"
            )
        names.append(name)
        types.append(typ)
    cols = []
    for field_name in (user_field, item_field):
        if field_name not in names:
            raise DataError(f"{path}:{hl}: no field {field_name!r} in header (fields: {', '.join(names)})")
        k = names.index(field_name)
        if types[k] != "token":
            raise DataError(f"{path}:{hl}: field {field_name!r} must be of type token, got {types[k]}")
        cols.append(k)
    ucol, icol = cols
    floats = [k for k, t in enumerate(types) if t == "float"]
    us: list[str] = []
    its: list[str] = []
    linenos: list[int] = []
    for lineno, line in lines:
        s = line.rstrip("\r\n")
        if not s.strip():
            continue
        row = s.split("\t")
        if len(row) != len(names):
            raise DataError(
                f"{path}:{lineno}: malformed line (expected {len(names)} tab-separated fields, "
                f"got {len(row)}): {_clip(s)}"
            )
        for k in floats:
            if row[k].strip():
                try:
                    float(row[k])
                except ValueError:
                    raise DataError(
                        f"{path}:{lineno}: field {names[k]!r} is not a number: {row[k][:30]!r}"
                    ) from None
        u, i = row[ucol].strip(), row[icol].strip()
        if not u or not i:
            raise DataError(f"{path}:{lineno}: empty user or item id: {_clip(s)}")
        us.append(u)
        its.append(i)
        linenos.append(lineno)
    return _from_raw(path, "recbole", us, its, linenos, duplicates)


# --------------------------------------------------------------------------- pickled COO
class _COOState:
    """Stands in for a pickled scipy COO class: it only records the pickled attributes, so
    no scipy code runs on untrusted state; :func:`read_coo_pickle` validates them and builds a
    fresh ``scipy.sparse.coo_matrix``. (Also independent of scipy's private layout, which
    changed from ``row``/``col`` to ``coords``.)"""

    def __setstate__(self, state) -> None:
        if not isinstance(state, dict):
            raise pickle.UnpicklingError("unexpected COO state")
        self.state = state


def _numpy_attr(modules: tuple[str, ...], name: str):
    import importlib

    for m in modules:
        try:
            return getattr(importlib.import_module(m), name)
        except (ImportError, AttributeError):
            continue
    return None


def _latin1_encode(s: str, encoding: str = "latin1") -> bytes:
    """What protocol-2 pickles call (as ``_codecs.encode``) to rebuild ``bytes``; only Latin-1."""
    if not isinstance(s, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode is allowed only for latin1 strings")
    return s.encode("latin1")


def _allowed_classes() -> dict[tuple[str, str], object]:
    core = ("numpy._core.multiarray", "numpy.core.multiarray")
    numeric = ("numpy._core.numeric", "numpy.core.numeric")
    allowed: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    for fn, mods in (("_reconstruct", core), ("scalar", core), ("_frombuffer", numeric)):
        obj = _numpy_attr(mods, fn)
        if obj is not None:
            for m in mods:
                allowed[(m, fn)] = obj
    for m in ("scipy.sparse.coo", "scipy.sparse._coo", "scipy.sparse", "scipy.sparse._arrays"):
        for cls in ("coo_matrix", "coo_array"):
            allowed[(m, cls)] = _COOState
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that can build only numpy arrays, dtypes and a scipy COO matrix.

    ``find_class`` is the only way a pickle reaches code; every other (module, name) is
    refused with a :class:`DataError` before anything is imported or called.
    """

    ALLOWED = _allowed_classes()

    def __init__(self, file, path: Path | str = "<pickle>") -> None:
        super().__init__(file)
        self._path = path

    def find_class(self, module: str, name: str):
        obj = self.ALLOWED.get((module, name))
        if obj is None:
            raise DataError(
                f"{self._path}: refusing to load pickle: it references {module}.{name}, "
                "which is not a numpy array or scipy COO matrix"
            )
        return obj

    def persistent_load(self, pid):
        raise DataError(f"{self._path}: refusing to load pickle: persistent ids are not allowed")


def _array(state: dict, key: str, path: Path) -> np.ndarray:
    a = state.get(key)
    if not isinstance(a, np.ndarray) or a.ndim != 1 or a.dtype.kind not in "iufb":
        raise DataError(f"{path}: pickled COO matrix has no valid 1-d numeric '{key}' array")
    return a


def read_coo_pickle(path: Path) -> sp.coo_matrix:
    """A pickled scipy COO matrix (plain or ``.gz``), through :class:`RestrictedUnpickler`.

    Returns a fresh ``scipy.sparse.coo_matrix`` of shape (rows, cols) built from the validated
    ``row``/``col``/``data`` arrays (legacy scipy) or ``coords``/``data`` (scipy >= 1.13).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            obj = RestrictedUnpickler(f, path).load()
    except DataError:
        raise
    except Exception as e:  # any failure inside a hostile or corrupt pickle is bad input
        raise DataError(f"{path}: not a valid pickle ({type(e).__name__}: {e})") from None
    if not isinstance(obj, _COOState):
        raise DataError(f"{path}: pickle holds a {type(obj).__name__}, not a scipy COO matrix")
    st = obj.state
    shape = st.get("_shape", st.get("shape"))
    try:
        shape = tuple(int(x) for x in shape)
        if len(shape) != 2 or min(shape) < 0:
            raise ValueError
    except (TypeError, ValueError):
        raise DataError(f"{path}: pickled COO matrix has no valid 2-d shape") from None
    if "coords" in st:
        coords = st["coords"]
        if not isinstance(coords, tuple) or len(coords) != 2:
            raise DataError(f"{path}: pickled COO matrix has no valid 'coords'")
        row, col = _array({"row": coords[0]}, "row", path), _array({"col": coords[1]}, "col", path)
    else:
        row, col = _array(st, "row", path), _array(st, "col", path)
    data = _array(st, "data", path)
    if row.dtype.kind not in "iu" or col.dtype.kind not in "iu":
        raise DataError(f"{path}: pickled COO matrix has non-integer indices")
    if not (len(row) == len(col) == len(data)):
        raise DataError(f"{path}: pickled COO matrix has row/col/data of different lengths")
    for name, a, n in (("row", row, shape[0]), ("col", col, shape[1])):
        if len(a) and (a.min() < 0 or a.max() >= n):
            bad = int(a[(a < 0) | (a >= n)][0])
            raise DataError(f"{path}: pickled COO matrix {name} index {bad} out of range [0, {n})")
    return sp.coo_matrix((np.array(data), (np.array(row), np.array(col))), shape=shape)


def read_coo_interactions(path: Path) -> Interactions:
    """A pickled COO matrix as :class:`Interactions` (nonzeros are interactions; shape = id space)."""
    m = read_coo_pickle(path)
    dup = m.nnz - sp.csr_matrix(m).nnz if m.nnz else 0
    if dup:
        raise DataError(f"{path}: pickled COO matrix has {dup} duplicate entries")
    inter = Interactions.from_csr(m)
    if len(inter) == 0:
        raise DataError(f"{path}: empty dataset (no nonzero entries)")
    return inter


# --------------------------------------------------------------------------- dispatch
FORMATS = ("lightgcn", "udata", "dat", "csv", "tsv", "recbole", "coo-pickle")


def guess_format(path: Path) -> str:
    """The format of a file from its name (``.gz`` ignored)."""
    name = Path(path).name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    if name.endswith(".inter"):
        return "recbole"
    if name.endswith((".pkl", ".pickle")):
        return "coo-pickle"
    if name.endswith(".dat"):
        return "dat"
    if name == "u.data" or name.endswith(".data"):
        return "udata"
    if name.endswith(".tsv"):
        return "tsv"
    if name.endswith(".csv"):
        return "csv"
    if name.endswith(".txt"):
        return "lightgcn"
    raise DataError(f"{path}: cannot tell the format from the file name (formats: {', '.join(FORMATS)})")


def _dense(inter: Interactions, path: Path, fmt: str, offset: int = 0) -> LoadedInteractions:
    return LoadedInteractions(
        inter,
        np.arange(inter.num_users, dtype=np.int64) + offset,
        np.arange(inter.num_items, dtype=np.int64) + offset,
        path,
        fmt,
    )


def load_interactions(path: str | os.PathLike, fmt: str | None = None, **options) -> LoadedInteractions:
    """Read one interaction file in any of :data:`FORMATS` (``fmt`` guessed from the name if None).

    ``options`` go to the reader (e.g. ``user_col=``, ``item_col=``, ``delimiter=`` for CSV;
    ``user_field=``, ``item_field=`` for RecBole; ``duplicates="error"``).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    fmt = fmt or guess_format(path)
    if fmt not in FORMATS:
        raise DataError(f"unknown format {fmt!r} (valid: {', '.join(FORMATS)})")
    if fmt == "tsv":
        options.setdefault("delimiter", "\t")
    reader = {
        "lightgcn": read_adjacency_list,
        "udata": read_udata,
        "coo-pickle": read_coo_interactions,
        "dat": read_dat,
        "recbole": read_recbole,
        "csv": read_csv,
        "tsv": read_csv,
    }[fmt]
    accepted = list(inspect.signature(reader).parameters)[1:]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise DataError(
            f"option {unknown[0]!r} does not apply to format {fmt!r} "
            f"(options: {', '.join(accepted) or 'none'})"
        )
    if fmt == "lightgcn":
        u, i = read_adjacency_list(path, **options)
        if len(u) == 0:
            raise DataError(f"{path}: empty dataset (no interactions)")
        return _dense(Interactions.from_pairs(u, i), path, fmt)
    if fmt == "udata":
        return _dense(read_udata(path, **options), path, fmt, offset=1)
    if fmt == "coo-pickle":
        return _dense(read_coo_interactions(path), path, fmt)
    return reader(path, **options)
