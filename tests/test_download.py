"""The downloader against a local HTTP server on 127.0.0.1: nothing here touches the internet."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import re
import threading
import zipfile
from pathlib import Path

import pytest

from unlearnrec.cli import main
from unlearnrec.data.datasets import DATASETS, load_dataset
from unlearnrec.data.download import MIRROR_ENV, SOURCES, RemoteFile, Source, download
from unlearnrec.data.synthetic import write_adjacency_list
from unlearnrec.errors import DataError

NOWHERE = "http://127.0.0.1:9/never-used/"  # the table's own base; every test passes mirror=


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def serve():
    """serve(folder) -> base URL of an HTTP server on 127.0.0.1 (random port) serving ``folder``;
    every server started is shut down at teardown."""
    servers = []

    def start(folder: Path) -> str:
        handler = functools.partial(_Quiet, directory=str(folder))
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        th = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        th.start()
        servers.append((srv, th))
        return f"http://127.0.0.1:{srv.server_address[1]}/"

    yield start
    for srv, th in servers:
        srv.shutdown()
        srv.server_close()
        th.join(timeout=5)


@pytest.fixture(autouse=True)
def _no_env_mirror(monkeypatch):
    monkeypatch.delenv(MIRROR_ENV, raising=False)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def fake_source(tmp_path, tiny_split):
    """A LightGCN-layout copy (``data/fake/{train,test}.txt``) of the tiny graph, and its table."""
    train, val, test = tiny_split
    remote = tmp_path / "remote"
    (remote / "data" / "fake").mkdir(parents=True)
    write_adjacency_list(train.union(val), remote / "data" / "fake" / "train.txt")
    write_adjacency_list(test, remote / "data" / "fake" / "test.txt")
    files = tuple(
        RemoteFile(f"data/fake/{n}", n, sha((remote / "data" / "fake" / n).read_bytes()))
        for n in ("train.txt", "test.txt")
    )
    return remote, {"fake": Source(NOWHERE, files)}


def leftovers(root: Path) -> list[str]:
    return [p.name for p in root.iterdir() if ".partial-" in p.name] if root.exists() else []


def test_download_verifies_gzips_and_loads(tmp_path, fake_source, serve, tiny_split):
    remote, table = fake_source
    url = serve(remote)
    root = tmp_path / "datasets"
    paths = download("fake", root, mirror=url, sources=table)
    assert [p.name for p in paths] == ["train.txt.gz", "test.txt.gz"]
    for p in paths:
        assert gzip.decompress(p.read_bytes()) == (remote / "data" / "fake" / p.name[:-3]).read_bytes()
    assert leftovers(root) == []
    d = load_dataset(str(root / "fake"), val_ratio=0.1)
    train, val, test = tiny_split
    assert len(d.test) == len(test) and len(d.full_train) == len(train) + len(val)


def test_existing_verified_files_are_skipped_unless_force(tmp_path, fake_source, serve):
    remote, table = fake_source
    url = serve(remote)
    root = tmp_path / "datasets"
    download("fake", root, mirror=url, sources=table)
    before = {p: p.stat().st_mtime_ns for p in (root / "fake").iterdir()}
    (remote / "data" / "fake" / "train.txt").write_text("0 1\n")  # the server now serves a changed file
    download("fake", root, mirror=url, sources=table)  # nothing fetched: local copies verify
    assert {p: p.stat().st_mtime_ns for p in (root / "fake").iterdir()} == before
    with pytest.raises(DataError, match="checksum mismatch"):
        download("fake", root, mirror=url, sources=table, force=True)
    # the failed forced download left the verified files untouched
    assert {p: p.stat().st_mtime_ns for p in (root / "fake").iterdir()} == before
    assert leftovers(root) == []


def test_corrupt_local_file_is_fetched_again(tmp_path, fake_source, serve):
    remote, table = fake_source
    url = serve(remote)
    root = tmp_path / "datasets"
    download("fake", root, mirror=url, sources=table)
    (root / "fake" / "test.txt.gz").write_bytes(gzip.compress(b"0 0\n"))
    download("fake", root, mirror=url, sources=table)
    assert (
        gzip.decompress((root / "fake" / "test.txt.gz").read_bytes())
        == (remote / "data" / "fake" / "test.txt").read_bytes()
    )


def test_checksum_mismatch_leaves_nothing(tmp_path, fake_source, serve):
    remote, table = fake_source
    bad = Source(NOWHERE, (table["fake"].files[0], RemoteFile("data/fake/test.txt", "test.txt", "0" * 64)))
    root = tmp_path / "datasets"
    with pytest.raises(DataError) as e:
        download("fake", root, mirror=serve(remote), sources={"fake": bad})
    msg = str(e.value)
    assert "\n" not in msg and "checksum mismatch" in msg and "data/fake/test.txt" in msg
    assert not (root / "fake").exists()  # train.txt verified, but nothing is moved in unless all do
    assert leftovers(root) == []


def test_http_error_is_one_line(tmp_path, fake_source, serve):
    remote, table = fake_source
    (remote / "data" / "fake" / "test.txt").unlink()
    root = tmp_path / "datasets"
    with pytest.raises(DataError, match=r"download failed: .*data/fake/test.txt: HTTP 404"):
        download("fake", root, mirror=serve(remote), sources=table)
    assert not (root / "fake").exists() and leftovers(root) == []


def test_mirror_from_environment(tmp_path, fake_source, serve, monkeypatch):
    remote, table = fake_source
    monkeypatch.setenv(MIRROR_ENV, serve(remote))
    paths = download("fake", tmp_path / "d", sources=table)
    assert all(p.is_file() for p in paths)


def test_zip_archive_source(tmp_path, serve):
    remote = tmp_path / "remote"
    remote.mkdir()
    udata = "".join(f"{u}\t{i}\t4\t88125094{u}\n" for u in range(1, 8) for i in range(1, 12) if (u + i) % 3)
    with zipfile.ZipFile(remote / "fake-100k.zip", "w") as zf:
        zf.writestr("fake-100k/u.data", udata)
        zf.writestr("fake-100k/README", "not wanted")
    table = {
        "fake-100k": Source(
            NOWHERE, (RemoteFile("fake-100k/u.data", "u.data", sha(udata.encode())),), archive="fake-100k.zip"
        )
    }
    root = tmp_path / "datasets"
    paths = download("fake-100k", root, mirror=serve(remote), sources=table)
    assert [p.name for p in paths] == ["u.data.gz"] and sorted(
        x.name for x in (root / "fake-100k").iterdir()
    ) == ["u.data.gz"]
    d = load_dataset(str(root / "fake-100k"))
    assert len(d.train) + len(d.val) + len(d.test) == udata.count("\n")
    missing = {
        "x": Source(NOWHERE, (RemoteFile("fake-100k/u.item", "u.item", "0" * 64),), archive="fake-100k.zip")
    }
    with pytest.raises(DataError, match="has no member fake-100k/u.item"):
        download("x", root, mirror=serve(remote), sources=missing)


def test_unknown_name_lists_valid_ones(tmp_path):
    with pytest.raises(DataError) as e:
        download("ml-20m", tmp_path)
    for name in SOURCES:
        assert name in str(e.value)


def test_source_table_is_complete_and_pinned():
    assert set(SOURCES) == set(DATASETS)
    for name, src in SOURCES.items():
        assert src.base.startswith("https://")
        names = {f.name for f in src.files}
        assert ("u.data" in names) if name == "ml-100k" else {"train.txt", "test.txt"} <= names
        for f in src.files:
            assert re.fullmatch(r"[0-9a-f]{64}", f.sha256)
    assert "e23f6432a7fd8dd72899dec165ac3a215f8e0bec" in SOURCES["ml-1m"].base
    assert "947ca2b3b1d2d3545b114145710cb06c4e57b3d2" in SOURCES["yelp2018"].base


@pytest.mark.realdata
def test_table_checksums_match_the_shared_copies(realdata):
    """The hard-coded sha256 are of the uncompressed files that PROVENANCE.md vouches for."""
    for name, src in SOURCES.items():
        for f in src.files:
            data = gzip.decompress((realdata / name / f"{f.name}.gz").read_bytes())
            assert sha(data) == f.sha256, (name, f.name)


@pytest.mark.realdata
def test_cli_download_ml1m_from_a_mirror_of_the_real_layout(realdata, tmp_path, serve, capsys):
    """`unlearnrec data download ml-1m --mirror URL` with the real checksums, then `data info`."""
    remote = tmp_path / "remote"
    for f in SOURCES["ml-1m"].files:
        dest = remote / f.path
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(gzip.decompress((realdata / "ml-1m" / f"{f.name}.gz").read_bytes()))
    root = tmp_path / "datasets"
    assert main(["data", "download", "ml-1m", "--mirror", serve(remote), "--data-dir", str(root)]) == 0
    assert "2 files verified" in capsys.readouterr().out
    assert main(["data", "info", "ml-1m", "--data-dir", str(root)]) == 0
    out = capsys.readouterr().out
    assert "6,040 users, 3,706 items, 920,193 interactions" in out and "train 720,152 / test 200,041" in out
