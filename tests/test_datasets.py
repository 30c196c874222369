"""File formats, named datasets and bad input: every malformed file is one DataError naming file:line."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import re
import subprocess

import numpy as np
import pytest
import scipy.sparse as sp

from unlearnrec.cli import main
from unlearnrec.data.datasets import (
    DATASETS,
    Dataset,
    data_dir,
    find_file,
    load_dataset,
    open_text,
    read_adjacency_list,
)
from unlearnrec.data.formats import (
    RestrictedUnpickler,
    load_interactions,
    read_coo_interactions,
    read_coo_pickle,
    read_csv,
    read_dat,
    read_id_list,
    read_recbole,
    read_udata,
    remap_ids,
    sniff_delimiter,
)
from unlearnrec.data.interactions import Interactions
from unlearnrec.data.synthetic import write_adjacency_list
from unlearnrec.errors import DataError


def write(path, text: str, encoding: str = "utf-8"):
    data = text.encode(encoding)
    if str(path).endswith(".gz"):
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


# ----------------------------------------------------------------------------- LightGCN lists
@pytest.mark.parametrize("name", ["a.txt", "a.txt.gz"])
def test_adjacency_list_plain_and_gz(tmp_path, name):
    p = write(tmp_path / name, "0 3 1\n\n2 0\n1\n3 2 4 0\n")
    u, i = read_adjacency_list(p)
    assert u.tolist() == [0, 0, 2, 3, 3, 3]
    assert i.tolist() == [3, 1, 0, 2, 4, 0]
    assert u.dtype == np.int64 and i.dtype == np.int64


def test_adjacency_list_tabs_crlf_and_no_final_newline(tmp_path):
    p = write(tmp_path / "a.txt", "0\t3  1\r\n5 7")
    u, i = read_adjacency_list(p)
    assert list(zip(u.tolist(), i.tolist(), strict=True)) == [(0, 3), (0, 1), (5, 7)]


def test_adjacency_list_large_ids_parse_exactly(tmp_path):
    big = 123456789012345678
    u, i = read_adjacency_list(write(tmp_path / "a.txt", f"{big} 9\n7 {big - 1}\n"))
    assert u.tolist() == [big, 7] and i.tolist() == [9, big - 1]


@pytest.mark.parametrize(
    "text, line, what",
    [
        ("0 1 2\n1 x 3\n", 2, "malformed"),
        ("0 1\n1 2\n2 -3\n", 3, "malformed"),
        ("0 1.5\n", 1, "malformed"),
        ("0 1\n\n4 1 2 1\n", 3, "duplicate"),
        ("0 1\n0 2\n0 1\n", 3, "duplicate"),
        ("0 1234567890123456789012\n", 1, "too large"),
    ],
)
def test_adjacency_list_errors_name_file_and_line(tmp_path, text, line, what):
    p = write(tmp_path / "train.txt", text)
    with pytest.raises(DataError) as e:
        read_adjacency_list(p)
    assert f"{p}:{line}:" in one_line(e)
    assert what in str(e.value)


def test_adjacency_list_range_checks(tmp_path):
    p = write(tmp_path / "t.txt", "0 1\n1 2 9\n")
    with pytest.raises(DataError, match=r":2: item id 9 out of range \[0, 5\)"):
        read_adjacency_list(p, num_items=5)
    with pytest.raises(DataError, match=r":2: user id 1 out of range \[0, 1\)"):
        read_adjacency_list(p, num_users=1)
    u, _ = read_adjacency_list(p, num_users=2, num_items=10)
    assert len(u) == 3


def test_adjacency_list_bad_gzip_and_missing(tmp_path):
    p = tmp_path / "x.txt.gz"
    p.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="cannot read"):
        read_adjacency_list(p)
    with pytest.raises(DataError, match="file not found"):
        read_adjacency_list(tmp_path / "missing.txt")


def test_open_text_and_find_file(tmp_path):
    write(tmp_path / "a.txt.gz", "héllo\n")
    assert find_file(tmp_path, "a.txt") == tmp_path / "a.txt.gz"
    with open_text(find_file(tmp_path, "a.txt")) as f:
        assert f.read() == "héllo\n"
    with pytest.raises(DataError, match="file not found"):
        find_file(tmp_path, "b.txt")


def test_id_list(tmp_path):
    ids = read_id_list(write(tmp_path / "user_list.txt", "org_id remap_id\n343 0\n77 1\n"))
    assert ids.tolist() == [343, 77]
    ids = read_id_list(write(tmp_path / "item_list.txt", "org_id remap_id\nab 0\ncd 1\n"))
    assert ids.tolist() == ["ab", "cd"]
    with pytest.raises(DataError, match=r"item_list.txt:3: remap_id '5' out of order"):
        read_id_list(write(tmp_path / "item_list.txt", "org_id remap_id\nab 0\ncd 5\n"))


# ----------------------------------------------------------------------------- GroupLens
def test_udata(tmp_path):
    p = write(tmp_path / "u.data.gz", "1\t2\t5\t881250949\n3\t1\t4\t881250950\n1\t3\t1\t881250951\n")
    inter = read_udata(p)
    assert (inter.num_users, inter.num_items) == (3, 3)
    assert list(zip(inter.users.tolist(), inter.items.tolist(), strict=True)) == [(0, 1), (0, 2), (2, 0)]


@pytest.mark.parametrize(
    "text, line, what",
    [
        ("1\t2\t5\t1\n0\t2\t5\t1\n", 2, "1-based"),
        ("1\t2\t5\t1\n1\tx\t5\t1\n", 2, "integer"),
        ("1\t2\t5\t1\n2\t3\t5\n", 2, "expected 4"),
        ("1 2 5 1\n", 1, "expected 2"),
    ],
)
def test_udata_errors(tmp_path, text, line, what):
    p = write(tmp_path / "u.data", text)
    with pytest.raises(DataError) as e:
        read_udata(p)
    assert f"{p}:{line}:" in one_line(e) and what in str(e.value)


def test_udata_out_of_range_and_empty(tmp_path):
    p = write(tmp_path / "u.data", "1\t2\t5\t1\n3\t9\t5\t1\n")
    with pytest.raises(DataError, match=r"u.data:2: item id 9 out of range \[1, 5\]"):
        read_udata(p, num_items=5)
    with pytest.raises(DataError, match="empty dataset"):
        read_udata(write(tmp_path / "e.data", "\n\n"))


def test_dat_remaps_latin1(tmp_path):
    text = "10::1193::5::978300760\n2::661::3::978302109\n10::5::4::97830\n2::1193::3::97\n"
    p = write(tmp_path / "ratings.dat", text, encoding="latin-1")
    loaded = read_dat(p)
    inter = loaded.interactions
    assert loaded.user_ids.tolist() == [2, 10]  # numeric order, not string order
    assert loaded.item_ids.tolist() == [5, 661, 1193]
    assert (inter.num_users, inter.num_items) == (2, 3)
    assert set(zip(inter.users.tolist(), inter.items.tolist(), strict=True)) == {
        (1, 2),
        (0, 1),
        (1, 0),
        (0, 2),
    }
    assert loaded.user_index(10) == 1 and loaded.item_index("661") == 1
    with pytest.raises(DataError, match="unknown user id 3"):
        loaded.user_index(3)


def test_dat_latin1_text_fields_and_errors(tmp_path):
    p = write(tmp_path / "movies.dat", "1::Amélie (2001)::Comedy\n2::Léon::Drama\n", encoding="latin-1")
    assert read_dat(p).item_ids.tolist() == ["Amélie (2001)", "Léon"]
    p = write(tmp_path / "r.dat", "1::2::3::4\n1::3::4\n")
    with pytest.raises(DataError) as e:
        read_dat(p)
    assert f"{p}:2:" in one_line(e) and "expected 4 fields" in str(e.value)
    p = write(tmp_path / "d.dat", "1::2::3::4\n\n1::2::5::6\n")
    assert read_dat(p).duplicates == 1
    with pytest.raises(DataError, match=r"d.dat:3: duplicate interaction"):
        read_dat(p, duplicates="error")
    with pytest.raises(DataError, match="empty dataset"):
        read_dat(write(tmp_path / "e.dat", ""))


def test_remap_ids():
    inv, uniq = remap_ids(["10", "9", "10", "100"])
    assert uniq.tolist() == [9, 10, 100] and inv.tolist() == [1, 0, 1, 2]
    inv, uniq = remap_ids(["b", "a", "b"])
    assert uniq.tolist() == ["a", "b"] and inv.tolist() == [1, 0, 1]
    inv, uniq = remap_ids(["7", "007"])  # numeric parsing would merge them: keep strings
    assert len(uniq) == 2 and sorted(inv.tolist()) == [0, 1]


# ----------------------------------------------------------------------------- CSV / TSV
@pytest.mark.parametrize("delim", [",", "\t", ";", "|"])
def test_csv_sniffs_delimiter(tmp_path, delim):
    rows = [["userId", "movieId", "rating"], ["u2", "m1", "4"], ["u1", "m1", "3"], ["u1", "m9", "1"]]
    p = write(tmp_path / "r.csv", "\n".join(delim.join(r) for r in rows) + "\n")
    loaded = read_csv(p)
    assert loaded.user_ids.tolist() == ["u1", "u2"] and loaded.item_ids.tolist() == ["m1", "m9"]
    inter = loaded.interactions
    assert list(zip(inter.users.tolist(), inter.items.tolist(), strict=True)) == [(0, 0), (0, 1), (1, 0)]


def test_csv_named_columns_quotes_and_tsv(tmp_path):
    p = write(tmp_path / "r.csv", 'who,what,note\n1,7,"a, b"\n2,7,"x"\n')
    loaded = read_csv(p, user_col="who", item_col="what")
    assert len(loaded.interactions) == 2 and loaded.item_ids.tolist() == [7]
    p = write(tmp_path / "r.tsv", "user_id\titem_id\n1\t2\n")
    assert len(load_interactions(p).interactions) == 1
    with pytest.raises(DataError, match=r"no user column 'who' in header \(columns: user_id, item_id\)"):
        read_csv(p, user_col="who")


@pytest.mark.parametrize(
    "text, line, what",
    [
        ("user,item\n1,2\n3\n", 3, "expected 2 fields"),
        ("user,item\n1,2\n3,4,5\n", 3, "expected 2 fields"),
        ("user,item\n1,2\n,4\n", 3, "empty user or item"),
        ("name;score\n1;2\n", 1, "no user column"),
        ("useritem\n12\n", 1, "cannot detect the delimiter"),
    ],
)
def test_csv_errors(tmp_path, text, line, what):
    p = write(tmp_path / "r.csv", text)
    with pytest.raises(DataError) as e:
        read_csv(p)
    assert f"{p}:{line}:" in one_line(e) and what in str(e.value)


def test_csv_empty(tmp_path):
    with pytest.raises(DataError, match="empty file"):
        read_csv(write(tmp_path / "r.csv", ""))
    with pytest.raises(DataError, match="empty dataset"):
        read_csv(write(tmp_path / "r.csv", "user,item\n"))


def test_sniff_delimiter():
    assert sniff_delimiter("a\tb,c\td") == "\t"
    assert sniff_delimiter("a;b;c") == ";"


# ----------------------------------------------------------------------------- RecBole
RECBOLE = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"


def test_recbole(tmp_path):
    p = write(
        tmp_path / "ml.inter", RECBOLE + "196\t242\t3\t881250949\n186\t302\t3\t891717742\n196\t5\t1\t1\n"
    )
    loaded = read_recbole(p)
    assert loaded.user_ids.tolist() == [186, 196] and loaded.item_ids.tolist() == [5, 242, 302]
    assert len(loaded.interactions) == 3 and loaded.format == "recbole"
    assert load_interactions(p).interactions.fingerprint() == loaded.interactions.fingerprint()


@pytest.mark.parametrize(
    "text, line, what",
    [
        ("user_id\titem_id\n1\t2\n", 1, "malformed RecBole header"),
        ("user_id:token\titem_id:blob\n1\t2\n", 1, "malformed RecBole header"),
        ("uid:token\titem_id:token\n1\t2\n", 1, "no field 'user_id'"),
        ("user_id:float\titem_id:token\n1\t2\n", 1, "must be of type token"),
        (RECBOLE + "1\t2\t3\t4\n1\t2\t3\n", 3, "expected 4"),
        (RECBOLE + "1\t2\t3\t4\n1\t3\tgood\t4\n", 3, "'rating' is not a number"),
    ],
)
def test_recbole_errors(tmp_path, text, line, what):
    p = write(tmp_path / "x.inter", text)
    with pytest.raises(DataError) as e:
        read_recbole(p)
    assert f"{p}:{line}:" in one_line(e) and what in str(e.value)


def test_load_interactions_dispatch_errors(tmp_path):
    p = write(tmp_path / "x.unknown", "1 2\n")
    with pytest.raises(DataError, match="cannot tell the format"):
        load_interactions(p)
    with pytest.raises(DataError, match="unknown format 'xml'"):
        load_interactions(p, fmt="xml")
    with pytest.raises(DataError, match="option 'user_col' does not apply to format 'lightgcn'"):
        load_interactions(p, fmt="lightgcn", user_col="u")
    assert load_interactions(p, fmt="lightgcn").interactions.num_items == 3


# ----------------------------------------------------------------------------- pickled COO
class _Legacy:
    """Pickles like a scipy < 1.8 ``scipy.sparse.coo.coo_matrix`` once its class name is swapped."""

    def __init__(self, state):
        self.state = state

    def __getstate__(self):
        return self.state


def _legacy_pickle(row, col, shape) -> bytes:
    state = {
        "_shape": shape,
        "maxprint": 50,
        "row": np.asarray(row, dtype=np.int32),
        "col": np.asarray(col, dtype=np.int32),
        "data": np.ones(len(row)),
        "has_canonical_format": False,
    }
    raw = pickle.dumps(_Legacy(state), protocol=2)
    # protocol 2 names classes as "c<module>\n<name>\n": point it at the legacy scipy path
    mod = _Legacy.__module__.encode()
    raw = raw.replace(b"c" + mod + b"\n_Legacy\n", b"cscipy.sparse.coo\ncoo_matrix\n")
    return raw


def test_coo_pickle_modern_roundtrip(tmp_path):
    m = sp.coo_matrix((np.ones(3), (np.array([0, 2, 1]), np.array([1, 0, 3]))), shape=(3, 4))
    for proto in (2, 4, 5):
        p = tmp_path / f"m{proto}.pkl.gz"
        p.write_bytes(gzip.compress(pickle.dumps(m, protocol=proto)))
        got = read_coo_pickle(p)
        assert isinstance(got, sp.coo_matrix) and got.shape == (3, 4)
        assert (got.toarray() == m.toarray()).all()
    inter = read_coo_interactions(p)
    assert list(zip(inter.users.tolist(), inter.items.tolist(), strict=True)) == [(0, 1), (1, 3), (2, 0)]


def test_coo_pickle_legacy_scipy_path(tmp_path):
    raw = _legacy_pickle([0, 1, 1], [2, 0, 1], (2, 3))
    assert b"scipy.sparse.coo\ncoo_matrix" in raw
    p = tmp_path / "legacy.pkl"
    p.write_bytes(raw)
    inter = load_interactions(p).interactions
    assert (inter.num_users, inter.num_items) == (2, 3)
    assert list(zip(inter.users.tolist(), inter.items.tolist(), strict=True)) == [(0, 2), (1, 0), (1, 1)]


def test_coo_pickle_validates_content(tmp_path):
    p = tmp_path / "bad.pkl"
    p.write_bytes(_legacy_pickle([0, 5], [0, 1], (2, 3)))
    with pytest.raises(DataError, match=r"row index 5 out of range \[0, 2\)"):
        read_coo_pickle(p)
    p.write_bytes(pickle.dumps(np.arange(3)))
    with pytest.raises(DataError, match="not a scipy COO matrix"):
        read_coo_pickle(p)
    p.write_bytes(pickle.dumps(sp.coo_matrix((3, 3)))[:-7])
    with pytest.raises(DataError, match="not a valid pickle"):
        read_coo_pickle(p)
    p.write_bytes(pickle.dumps(sp.coo_matrix((3, 3))))
    with pytest.raises(DataError, match="empty dataset"):
        read_coo_interactions(p)


class _Evil:
    def __init__(self, call, args):
        self.call, self.args = call, args

    def __reduce__(self):
        return (self.call, self.args)


@pytest.mark.parametrize("kind", ["system", "eval", "popen"])
def test_malicious_pickle_is_refused_without_running(tmp_path, kind):
    marker = tmp_path / "pwned"
    cmd = f"touch {marker}"
    if kind == "system":
        evil = _Evil(os.system, (cmd,))
    elif kind == "eval":
        evil = _Evil(eval, (f"__import__('os').system({cmd!r})",))
    else:
        evil = _Evil(subprocess.Popen, (["touch", str(marker)],))
    raw = pickle.dumps(evil, protocol=4)
    if kind == "system":  # the payload is real: a plain pickle.loads runs it
        pickle.loads(raw.replace(b"pwned", b"plain"))
        assert (tmp_path / "plain").exists()
    p = tmp_path / "evil.pkl.gz"
    p.write_bytes(gzip.compress(raw))
    with pytest.raises(DataError) as e:
        read_coo_pickle(p)
    assert "refusing to load pickle" in one_line(e) and str(p) in str(e.value)
    assert not marker.exists()


def test_malicious_pickle_nested_inside_coo_state(tmp_path):
    marker = tmp_path / "pwned"
    m = sp.coo_matrix((np.ones(1), (np.array([0]), np.array([0]))), shape=(1, 1))
    m.evil = _Evil(os.system, (f"touch {marker}",))  # rides along in the pickled __dict__
    p = tmp_path / "evil.pkl"
    p.write_bytes(pickle.dumps(m))
    with pytest.raises(DataError, match=r"references (posix|nt)\.system"):
        read_coo_pickle(p)
    assert not marker.exists()


def test_restricted_unpickler_allows_only_known_classes():
    assert ("numpy", "ndarray") in RestrictedUnpickler.ALLOWED
    for module, name in RestrictedUnpickler.ALLOWED:
        assert module.split(".")[0] in ("numpy", "scipy") or (module, name) == ("_codecs", "encode")
    encode = RestrictedUnpickler.ALLOWED[("_codecs", "encode")]  # protocol 2 rebuilds bytes with it
    assert encode("ab\xff", "latin1") == b"ab\xff"
    with pytest.raises(pickle.UnpicklingError):
        encode("ab", "zlib_codec")
    u = RestrictedUnpickler(io.BytesIO(b""), "x.pkl")
    for module, name in [("builtins", "eval"), ("os", "system"), ("numpy", "load"), ("subprocess", "Popen")]:
        with pytest.raises(DataError, match=f"references {module}.{name}"):
            u.find_class(module, name)


# ----------------------------------------------------------------------------- load_dataset
def test_load_lightgcn_folder(tiny_dir, tiny_split):
    train, val, test = tiny_split
    d = load_dataset(str(tiny_dir), val_ratio=0.1, seed=0)
    assert isinstance(d, Dataset)
    assert (
        d.test.fingerprint() == Interactions(test.users, test.items, d.num_users, d.num_items).fingerprint()
    )
    assert len(d.full_train) == len(train) + len(val)
    st = d.stats()
    assert st["split"] == "shipped" and st["shipped_train"] == len(train) + len(val)
    assert st["interactions"] == st["train"] + st["val"] + st["test"]
    assert d.val.intersects(d.train) == 0 and d.test.intersects(d.full_train) == 0


def test_load_lightgcn_folder_with_id_lists(tmp_path):
    write(tmp_path / "train.txt", "0 1\n1 0\n")
    write(tmp_path / "test.txt", "0 0\n")
    write(tmp_path / "user_list.txt", "org_id remap_id\n11 0\n12 1\n13 2\n")
    write(tmp_path / "item_list.txt", "org_id remap_id\na 0\nb 1\nc 2\nd 3\n")
    d = load_dataset(str(tmp_path), val_ratio=0.0)
    assert (d.num_users, d.num_items) == (3, 4)  # the lists fix the id space, not max id + 1
    assert d.meta["user_ids"].tolist() == [11, 12, 13]
    write(tmp_path / "test.txt", "0 0\n1 7\n")
    with pytest.raises(DataError, match=r"test.txt:2: item id 7 out of range \[0, 4\)"):
        load_dataset(str(tmp_path))


@pytest.mark.parametrize(
    "train, test, what",
    [
        ("", "0 1\n", "empty dataset"),
        ("0 1\n", "\n", "empty dataset"),
        ("0 1\n1 1\n", "1 1\n", "share 1 interactions"),
    ],
)
def test_load_lightgcn_folder_bad(tmp_path, train, test, what):
    write(tmp_path / "train.txt", train)
    write(tmp_path / "test.txt", test)
    with pytest.raises(DataError, match=what):
        load_dataset(str(tmp_path))


def test_load_folder_missing_test(tmp_path):
    write(tmp_path / "train.txt", "0 1\n")
    with pytest.raises(DataError, match=r"file not found: .*test.txt"):
        load_dataset(str(tmp_path))


def test_load_unsplit_file_splits_per_user(tmp_path):
    rng = np.random.default_rng(0)
    rows = {
        (f"user{u}", f"item{i}")
        for u, i in zip(rng.integers(0, 30, 600), rng.integers(0, 50, 600), strict=True)
    }
    p = write(tmp_path / "log.csv", "user,item\n" + "".join(f"{u},{i}\n" for u, i in sorted(rows)))
    d = load_dataset(str(p), fractions=(0.7, 0.1, 0.2), seed=3)
    assert d.meta["split"] == "per-user" and d.meta["format"] == "csv"
    assert len(d.train) + len(d.val) + len(d.test) == len(rows)
    assert len(d.meta["user_ids"]) == d.num_users and len(d.meta["item_ids"]) == d.num_items
    assert (d.train.user_degrees() > 0).sum() == d.num_users
    # raw ids survive the remap: every split edge maps back to a row of the file
    uid, iid = d.meta["user_ids"], d.meta["item_ids"]
    back = set(zip(uid[d.test.users].tolist(), iid[d.test.items].tolist(), strict=True))
    assert back <= rows
    d2 = load_dataset(str(p), fractions=(0.7, 0.1, 0.2), seed=3)
    assert d2.test.fingerprint() == d.test.fingerprint()


def test_load_folder_with_udata_or_inter(tmp_path):
    a = tmp_path / "a"
    a.mkdir()
    write(a / "u.data.gz", "".join(f"{u}\t{i}\t3\t0\n" for u in range(1, 6) for i in range(1, 11)))
    d = load_dataset(str(a))
    assert (d.num_users, d.num_items) == (5, 10) and d.meta["format"] == "udata"
    assert d.meta["user_ids"].tolist() == [1, 2, 3, 4, 5]
    b = tmp_path / "b"
    b.mkdir()
    write(b / "x.inter", RECBOLE + "".join(f"{u}\t{i}\t1\t0\n" for u in range(4) for i in range(5)))
    assert load_dataset(str(b)).meta["format"] == "recbole"
    c = tmp_path / "c"
    c.mkdir()
    with pytest.raises(DataError, match="no dataset files found"):
        load_dataset(str(c))


def test_unknown_dataset_lists_valid_names(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset("ml-10m", tmp_path)
    msg = one_line(e)
    for name in DATASETS:
        assert name in msg


def test_missing_named_dataset_folder(tmp_path):
    with pytest.raises(DataError, match=r"dataset folder not found: .*ml-1m .*data download ml-1m"):
        load_dataset("ml-1m", tmp_path)


def test_bad_split_arguments(tiny_dir):
    with pytest.raises(DataError, match="val_ratio"):
        load_dataset(str(tiny_dir), val_ratio=1.0)
    with pytest.raises(DataError, match="fractions"):
        load_dataset(str(tiny_dir), fractions=(0.5, 0.5))


def test_data_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("UNLEARNREC_DATA", str(tmp_path / "env"))
    assert data_dir() == tmp_path / "env"
    assert data_dir(tmp_path / "x") == tmp_path / "x"
    monkeypatch.delenv("UNLEARNREC_DATA")
    assert data_dir().name == "data"


def test_cli_data_info_and_errors(tiny_dir, tmp_path, capsys):
    assert main(["data", "info", str(tiny_dir)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"60 users, 40 items, [\d,]+ interactions", out) and "shipped split" in out
    assert main(["data", "info", "nope", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "valid: gowalla, ml-100k, ml-1m, yelp2018" in err[0]
    bad = tmp_path / "bad"
    bad.mkdir()
    write(bad / "train.txt", "0 1\n0 oops\n")
    write(bad / "test.txt", "0 2\n")
    assert main(["data", "info", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{bad / 'train.txt'}:2: malformed line" in err[0]


# ----------------------------------------------------------------------------- real data
README = {  # ../shared/data/README.md
    "ml-1m": (6040, 3706, 920193, 720152, 200041),
    "yelp2018": (31668, 38048, 1561406, 1237259, 324147),
    "gowalla": (29858, 40981, 1027370, 810128, 217242),
}


@pytest.mark.realdata
@pytest.mark.parametrize("name", sorted(README))
def test_real_lightgcn_datasets_match_readme(realdata, name):
    d = load_dataset(name, realdata, val_ratio=0.1, seed=0)
    st = d.stats()
    assert (st["users"], st["items"], st["interactions"], st["shipped_train"], st["test"]) == README[name]
    assert st["val"] > 0 and st["train"] + st["val"] == st["shipped_train"]


@pytest.mark.realdata
def test_real_ml100k_matches_readme(realdata):
    d = load_dataset("ml-100k", realdata)
    st = d.stats()
    assert (st["users"], st["items"], st["interactions"]) == (943, 1682, 100000)
    assert (d.train.user_degrees() > 0).all()  # every user has >= 20 ratings, so keeps train edges


@pytest.mark.realdata
def test_real_ml1m_test_pickle_equals_test_txt(realdata):
    folder = realdata / "ml-1m"
    m = read_coo_pickle(folder / "tst_mat.pkl.gz")
    assert m.shape == (6040, 3706) and m.nnz == 200041
    from_pickle = Interactions.from_csr(m)
    u, i = read_adjacency_list(folder / "test.txt.gz")
    from_txt = Interactions.from_pairs(u, i, 6040, 3706)
    assert from_pickle.fingerprint() == from_txt.fingerprint()


def test_write_then_read_adjacency_roundtrip(tmp_path, tiny):
    p = tmp_path / "t.txt"
    write_adjacency_list(tiny, p)
    u, i = read_adjacency_list(p)
    assert Interactions.from_pairs(u, i, tiny.num_users, tiny.num_items).fingerprint() == tiny.fingerprint()


def test_decode_error_names_the_line(tmp_path):
    p = tmp_path / "r.csv"
    p.write_bytes(b"user,item\n1,2\n3,\xff\xfe\n")
    with pytest.raises(DataError, match=r"r.csv:3: cannot decode as utf-8"):
        read_csv(p)


def test_csv_bom_and_crlf(tmp_path):
    p = tmp_path / "r.csv"
    p.write_bytes(b"\xef\xbb\xbfuser,item\r\n1,2\r\n3,4\r\n")  # BOM and CRLF, as Excel writes
    loaded = read_csv(p)
    assert loaded.item_ids.tolist() == [2, 4] and len(loaded.interactions) == 2
