"""Fetch the public originals of the named datasets, sha256-verified, into ``data_dir/name``.

Each file is downloaded to a temporary file, its sha256 (of the *uncompressed* content, so the
checksums below also verify a ``.gz`` copy) compared with the literal table, then gzipped into
``data_dir/name/<file>.gz``. All files of a dataset are staged first and moved into place
(``os.replace``) only when every one verified: a failed download leaves nothing half-written.

``mirror=`` (CLI ``--mirror URL``, env ``UNLEARNREC_MIRROR``) replaces a source's base URL with a
server laid out like the original (a cache, or the local server of the tests).
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from unlearnrec.data.datasets import data_dir as resolve_data_dir
from unlearnrec.errors import DataError

log = logging.getLogger(__name__)

MIRROR_ENV = "UNLEARNREC_MIRROR"
CHUNK = 1 << 20


@dataclass(frozen=True)
class RemoteFile:
    """One file of a source: ``path`` relative to the source's base URL (or a member of its zip
    archive), stored as ``name + ".gz"``; ``sha256`` is of the uncompressed content."""

    path: str
    name: str
    sha256: str


@dataclass(frozen=True)
class Source:
    """Where a named dataset comes from. With ``archive``, ``base + archive`` is a zip file and
    the ``files`` paths are members of it; otherwise each file is fetched from ``base + path``."""

    base: str
    files: tuple[RemoteFile, ...]
    archive: str | None = None
    note: str = ""


_RU = "https://raw.githubusercontent.com/chenchongthu/Recommendation-Unlearning/e23f6432a7fd8dd72899dec165ac3a215f8e0bec/"
_LG = "https://raw.githubusercontent.com/gusye1234/LightGCN-PyTorch/947ca2b3b1d2d3545b114145710cb06c4e57b3d2/"

# sha256 of the uncompressed files, computed from the byte-identical copies in ../shared/data
# (each folder's PROVENANCE.md gives the source and the checksum of the gz).
SOURCES: dict[str, Source] = {
    "ml-1m": Source(
        _RU,
        (
            RemoteFile(
                "data/ml-1m/train.txt",
                "train.txt",
                "c74ca36cdff687523a151f25ae24a8e93f52906d599e446625a393fdb06443d7",
            ),
            RemoteFile(
                "data/ml-1m/test.txt",
                "test.txt",
                "0ea4825f0016fffc2b44329ef3617efbf6a3c3ba6e145c48b7a8b46b7313d5c5",
            ),
        ),
        note="the UnlearnRec/RecEraser train/test split of MovieLens-1M (GroupLens licence)",
    ),
    "gowalla": Source(
        _LG,
        (
            RemoteFile(
                "data/gowalla/train.txt",
                "train.txt",
                "7244696fdeb23911319cf7b689f2e15a3c4c92549c873a5677b44e3f13cc3e62",
            ),
            RemoteFile(
                "data/gowalla/test.txt",
                "test.txt",
                "099a2a73924e4b754dc6efd730d764f492321b53c38eb93298850c83acf57be3",
            ),
            RemoteFile(
                "data/gowalla/user_list.txt",
                "user_list.txt",
                "5344c4d0deef610e1f148f23ad216a0db03b36f88834cd39a06786a672c5f5a1",
            ),
            RemoteFile(
                "data/gowalla/item_list.txt",
                "item_list.txt",
                "6b186f92890cc3f0c15a6dae5d6285f125a302bb8c5ea0cd9a16cf9c16347139",
            ),
        ),
        note="the LightGCN/NGCF split of Gowalla",
    ),
    "yelp2018": Source(
        _LG,
        (
            RemoteFile(
                "data/yelp2018/train.txt",
                "train.txt",
                "1e9568725a9e833d0ac3bae01c94cd95367f73b3bb6104fd26b5f65ea5054093",
            ),
            RemoteFile(
                "data/yelp2018/test.txt",
                "test.txt",
                "9cd9b37926cd1447a06625ffa7914527573fb097c10cb0bbdb1d1b8ded3742fe",
            ),
            RemoteFile(
                "data/yelp2018/user_list.txt",
                "user_list.txt",
                "4931519d8b3c40d71a34cc386c3287b6d63c1be9a82edd7ee6bfad765e640778",
            ),
            RemoteFile(
                "data/yelp2018/item_list.txt",
                "item_list.txt",
                "1091bc824b60561906df552f2f7cb3ec61767b1e46fd4386b44400ae49712007",
            ),
        ),
        note="the LightGCN/NGCF split of Yelp2018 (Yelp dataset terms)",
    ),
    "ml-100k": Source(
        "https://files.grouplens.org/datasets/movielens/",
        (
            RemoteFile(
                "ml-100k/u.data", "u.data", "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490"
            ),
            RemoteFile(
                "ml-100k/u.item", "u.item", "553841ebc7de3a0fd0d6b62a204ea30c1e651aacfb2814c7a6584ac52f2c5701"
            ),
            RemoteFile(
                "ml-100k/u.user", "u.user", "f120e114da2e8cf314fd28f99417c94ae9ddf1cb6db8ce0e4b5995d40e90e62c"
            ),
        ),
        archive="ml-100k.zip",
        note="GroupLens MovieLens-100K (GroupLens licence)",
    ),
}


def _url(base: str, path: str) -> str:
    return base.rstrip("/") + "/" + path.lstrip("/")


def _fetch(url: str, dest: Path, timeout: float) -> None:
    """Stream ``url`` into ``dest``; any network or HTTP failure is a one-line :class:`DataError`."""
    if not url.startswith(("http://", "https://", "file://")):
        raise DataError(f"unsupported URL scheme: {url}")
    log.info("downloading %s", url)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r, dest.open("wb") as f:  # noqa: S310
            shutil.copyfileobj(r, f, CHUNK)
    except urllib.error.HTTPError as e:
        raise DataError(f"download failed: {url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DataError(f"download failed: {url}: {reason}") from None


def _sha256_stream(f) -> str:
    h = hashlib.sha256()
    for block in iter(lambda: f.read(CHUNK), b""):
        h.update(block)
    return h.hexdigest()


def _sha256_gz(path: Path) -> str | None:
    """sha256 of the uncompressed content of a gz file, or None if it cannot be read."""
    try:
        with gzip.open(path, "rb") as f:
            return _sha256_stream(f)
    except (OSError, EOFError):
        return None


def _verify(path: Path, expected: str, what: str) -> None:
    with path.open("rb") as f:
        got = _sha256_stream(f)
    if got != expected:
        raise DataError(f"checksum mismatch for {what}: expected sha256 {expected}, got {got}")


def _gzip_into(src: Path, dest: Path) -> None:
    with src.open("rb") as fi, gzip.open(dest, "wb", compresslevel=6) as fo:
        shutil.copyfileobj(fi, fo, CHUNK)


def download(
    name: str,
    data_dir: str | os.PathLike | None = None,
    mirror: str | None = None,
    force: bool = False,
    sources: Mapping[str, Source] | None = None,
    timeout: float = 60.0,
) -> list[Path]:
    """Download, verify and store dataset ``name``; returns the paths of its ``.gz`` files.

    ``data_dir``: the dataset root (default: ``$UNLEARNREC_DATA``, see ``datasets.data_dir``);
    files go to ``data_dir/name/<file>.gz``. Files already present whose uncompressed sha256
    matches are kept unless ``force``. ``mirror``: a base URL replacing the source's (default:
    ``$UNLEARNREC_MIRROR``). ``sources``: the table to use (default :data:`SOURCES`; tests pass
    their own). A checksum mismatch or a failed request raises :class:`DataError` and leaves the
    target folder as it was.
    """
    table = SOURCES if sources is None else sources
    if name not in table:
        raise DataError(f"unknown dataset '{name}' for download (valid: {', '.join(sorted(table))})")
    src = table[name]
    mirror = mirror or os.environ.get(MIRROR_ENV) or None
    base = mirror or src.base
    target = resolve_data_dir(data_dir) / name
    final = {f.name: target / f"{f.name}.gz" for f in src.files}

    todo = []
    for f in src.files:
        if not force and final[f.name].is_file() and _sha256_gz(final[f.name]) == f.sha256:
            log.info("%s: already present and verified", final[f.name])
            continue
        todo.append(f)
    if not todo:
        return list(final.values())

    root = target.parent
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create {root}: {e}") from None
    stage = Path(tempfile.mkdtemp(prefix=f".{name}.partial-", dir=root))
    try:
        staged: dict[str, Path] = {}
        if src.archive:
            url = _url(base, src.archive)
            archive = stage / "archive.zip"
            _fetch(url, archive, timeout)
            try:
                zf = zipfile.ZipFile(archive)
            except zipfile.BadZipFile:
                raise DataError(f"download failed: {url}: not a zip archive") from None
            with zf:
                members = set(zf.namelist())
                for f in todo:
                    if f.path not in members:
                        raise DataError(f"download failed: {url} has no member {f.path}")
                    raw = stage / f"{f.name}.raw"
                    with zf.open(f.path) as fi, raw.open("wb") as fo:
                        shutil.copyfileobj(fi, fo, CHUNK)
                    _verify(raw, f.sha256, f"{url}!{f.path}")
                    staged[f.name] = raw
        else:
            for f in todo:
                url = _url(base, f.path)
                raw = stage / f"{f.name}.raw"
                _fetch(url, raw, timeout)
                _verify(raw, f.sha256, url)
                staged[f.name] = raw
        gzs = {}
        for fname, raw in staged.items():
            gz = stage / f"{fname}.gz"
            _gzip_into(raw, gz)
            raw.unlink()
            gzs[fname] = gz
        target.mkdir(parents=True, exist_ok=True)
        for fname, gz in gzs.items():
            os.replace(gz, final[fname])  # atomic per file; every file verified before the first move
            log.info("wrote %s", final[fname])
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return list(final.values())
