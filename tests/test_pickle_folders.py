"""Dataset folders in the UnlearnRec authors' / SSLRec layout: one pickled COO matrix per split."""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import pickle

import numpy as np
import pytest
import scipy.sparse as sp

from unlearnrec.cli import main
from unlearnrec.data.datasets import load_dataset
from unlearnrec.data.formats import read_coo_interactions
from unlearnrec.data.synthetic import planted_clusters
from unlearnrec.errors import DataError

from .test_datasets import _legacy_pickle


def _coo(inter) -> sp.coo_matrix:
    return sp.coo_matrix(
        (np.ones(len(inter)), (inter.users.astype(np.int32), inter.items.astype(np.int32))),
        shape=(inter.num_users, inter.num_items),
    )


def _write(path, m, gz: bool, legacy: bool = False):
    raw = _legacy_pickle(m.row, m.col, m.shape) if legacy else pickle.dumps(m, protocol=4)
    if gz:
        path = path.with_name(path.name + ".gz")
        raw = gzip.compress(raw)
    path.write_bytes(raw)


def _split(seed=0):
    inter = planted_clusters(30, 20, clusters=3, seed=seed)
    rng = np.random.default_rng(seed)
    part = rng.integers(0, 10, len(inter))
    return inter.subset(part < 7), inter.subset(part == 7), inter.subset(part >= 8)


@pytest.mark.parametrize(
    "names, gz, legacy",
    [
        (("trnMat.pkl", "valMat.pkl", "tstMat.pkl"), False, False),
        (("trnMat.pkl", "valMat.pkl", "tstMat.pkl"), True, True),
        (("trn_mat.pkl", None, "tst_mat.pkl"), True, False),
        (("trn_mat.pkl", None, "tst_mat.pkl"), False, True),
    ],
)
def test_pickle_folder_loads_with_its_shipped_splits(tmp_path, names, gz, legacy):
    train, val, test = _split()
    for name, part in zip(names, (train, val, test), strict=True):
        if name:
            _write(tmp_path / name, _coo(part), gz, legacy)
    data = load_dataset(str(tmp_path), val_ratio=0.4, seed=0)
    assert data.meta["split"] == "shipped" and data.meta["format"] == "coo-pickle"
    assert data.test.fingerprint() == test.fingerprint()
    if names[1]:  # a shipped validation matrix is the validation split, as it is
        assert data.val.fingerprint() == val.fingerprint()
        assert data.train.fingerprint() == train.fingerprint()
    else:  # no validation shipped: a seeded share of train, train ∪ val = the shipped train
        assert 0 < len(data.val) < len(train)
        assert data.full_train.fingerprint() == train.fingerprint()
    assert (data.num_users, data.num_items) == (30, 20)


def test_pickle_folder_trains_through_the_cli(tmp_path):
    train, _, test = _split()
    d = tmp_path / "authors"
    d.mkdir()
    _write(d / "trn_mat.pkl", _coo(train), gz=True)
    _write(d / "tst_mat.pkl", _coo(test), gz=True)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["data", "info", str(d)])
        assert code == 0, err.getvalue()
        code = main(
            ["train", "--dataset", str(d), "--epochs", "1", "--dim", "4", "--out", str(tmp_path / "m"), "-q"]
        )
    assert code == 0, err.getvalue()
    assert "shipped split" in out.getvalue()


def test_pickle_folder_shapes_must_agree(tmp_path):
    train, _, test = _split()
    _write(tmp_path / "trnMat.pkl", _coo(train), gz=False)
    m = _coo(test)
    _write(tmp_path / "tstMat.pkl", sp.coo_matrix((m.data, (m.row, m.col)), shape=(30, 25)), gz=False)
    with pytest.raises(DataError, match="different shapes"):
        load_dataset(str(tmp_path))


class _Evil:
    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def test_malicious_pickle_in_a_folder_is_refused_with_one_line(tmp_path):
    train, _, test = _split()
    marker = tmp_path / "pwned"
    _write(tmp_path / "trnMat.pkl", _coo(train), gz=False)
    (tmp_path / "tstMat.pkl").write_bytes(pickle.dumps(_Evil(os.system, (f"touch {marker}",))))
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main(["data", "info", str(tmp_path)])
    assert code == 2 and not marker.exists()
    lines = err.getvalue().strip().splitlines()
    assert len(lines) == 1 and "refusing to load pickle" in lines[0] and "Traceback" not in err.getvalue()


@pytest.mark.realdata
def test_real_authors_test_matrix_matches_test_txt(realdata):
    # the UnlearnRec authors' ML-1M tst_mat.pkl.gz: same edges as the shipped test.txt
    m = read_coo_interactions(realdata / "ml-1m" / "tst_mat.pkl.gz")
    data = load_dataset("ml-1m", realdata, val_ratio=0.0)
    assert (m.num_users, m.num_items) == (6040, 3706)
    assert len(m) == 200_041
    assert m.fingerprint() == data.test.fingerprint()
