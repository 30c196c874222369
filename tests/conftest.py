"""Shared fixtures: tiny synthetic graphs with known structure, and the real-data location."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from unlearnrec.data.datasets import load_dataset
from unlearnrec.data.interactions import Interactions
from unlearnrec.data.splits import split_fractions
from unlearnrec.data.synthetic import planted_clusters, write_adjacency_list

torch.set_num_threads(1)

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str):
    """Import ``benchmarks/NAME.py`` (the scripts are not a package) as a module."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def real_data_dir() -> Path | None:
    env = os.environ.get("UNLEARNREC_DATA")
    for p in ([Path(env)] if env else []) + [SHARED]:
        if (p / "ml-1m").is_dir():
            return p
    return None


@pytest.fixture(scope="session")
def realdata() -> Path:
    d = real_data_dir()
    if d is None:
        pytest.skip("real datasets not available (set UNLEARNREC_DATA)")
    return d


@pytest.fixture
def tiny() -> Interactions:
    """60 users, 40 items, 4 planted clusters."""
    return planted_clusters(60, 40, clusters=4, seed=0)


@pytest.fixture
def tiny_split(tiny):
    """(train, val, test) of the tiny graph, 70/10/20 per user."""
    return split_fractions(tiny, (0.7, 0.1, 0.2), seed=0)


@pytest.fixture
def tiny_dir(tmp_path, tiny_split) -> Path:
    """A LightGCN-format dataset folder (train.txt, test.txt) of the tiny graph."""
    train, val, test = tiny_split
    d = tmp_path / "tinyset"
    d.mkdir()
    write_adjacency_list(train.union(val), d / "train.txt")
    write_adjacency_list(test, d / "test.txt")
    return d


@pytest.fixture
def tiny_dataset(tiny_dir):
    return load_dataset(str(tiny_dir), val_ratio=0.1, seed=0)


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """Run ``unlearnrec ARGV`` in-process: (exit status, stdout, stderr)."""
    from unlearnrec.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def cli_trained(tmp_path, tiny_dir, capsys):
    """(model dir, the train command's JSON) of a small LightGCN trained on ``tiny_dir`` by the CLI."""
    import json

    out = tmp_path / "model"
    code, o, e = run_cli(
        capsys,
        "train",
        "--dataset",
        tiny_dir,
        "--epochs",
        6,
        "--dim",
        8,
        "--lr",
        0.05,
        "--out",
        out,
        "--json",
        "-q",
    )
    assert code == 0, e
    return out, json.loads(o)


def three_edge() -> Interactions:
    """users {0,1}, items {0,1}: edges (0,0), (0,1), (1,1)."""
    return Interactions(np.array([0, 0, 1]), np.array([0, 1, 1]), 2, 2)


@pytest.fixture(scope="session")
def _runner_caches(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runner-caches")


@pytest.fixture(autouse=True)
def runner_cache(_runner_caches, request, monkeypatch) -> Path:
    """The experiment runner's cache root for this test ($UNLEARNREC_CACHE): never ~/.cache, never shared
    with another test; created only when something is cached."""
    import hashlib

    root = _runner_caches / hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:16]
    monkeypatch.setenv("UNLEARNREC_CACHE", str(root))
    return root


@pytest.fixture
def counted_fit(monkeypatch):
    """Counts the experiment store's own trainings (Retrain trains through its method, not counted)."""
    from unlearnrec.experiments import store as store_mod

    calls = []
    real = store_mod.fit

    def fit(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(store_mod, "fit", fit)
    return calls


def build_cli_world(root: Path, capsys=None) -> dict[str, Path]:
    """Every input file kind of the command line, made once by the CLI itself on the tiny graph.

    ``data`` (LightGCN folder), ``pkl`` (the same split as pickled COO matrices), ``model``
    (trained LightGCN), ``encoder`` (pre-trained IE), ``request`` (sampled edges), ``ledger`` (one
    honoured request), ``forgot`` (the model after it), ``train_toml`` and ``ie_toml`` (configs).
    Output is captured with redirect (no capsys needed).
    """
    import contextlib
    import io

    from unlearnrec.cli import main

    train, val, test = split_fractions(planted_clusters(60, 40, clusters=4, seed=0), (0.7, 0.1, 0.2), seed=0)
    data = root / "tinyset"
    data.mkdir(parents=True)
    write_adjacency_list(train.union(val), data / "train.txt")
    write_adjacency_list(test, data / "test.txt")
    w = {"data": data, "root": root}
    import pickle

    import scipy.sparse as sp

    w["pkl"] = root / "authors"  # the UnlearnRec authors' layout: pickled COO matrices
    w["pkl"].mkdir()
    for name, part in (("trn_mat.pkl", train.union(val)), ("tst_mat.pkl", test)):
        shape = (part.num_users, part.num_items)
        m = sp.coo_matrix((np.ones(len(part)), (part.users, part.items)), shape=shape)
        (w["pkl"] / name).write_bytes(pickle.dumps(m, protocol=4))
    w["train_toml"] = root / "train.toml"
    w["train_toml"].write_text("[model]\ndim = 8\n\n[train]\nepochs = 4\nlr = 0.05\n")
    w["ie_toml"] = root / "ie.toml"
    w["ie_toml"].write_text("epochs = 1\nbatch_size = 256\n")
    w.update(
        model=root / "model",
        encoder=root / "encoder",
        request=root / "request.tsv",
        ledger=root / "ledger.jsonl",
        forgot=root / "forgot",
    )
    steps = [
        ["train", "--dataset", data, "--config", w["train_toml"], "--out", w["model"]],
        ["pretrain", "--model", w["model"], "--config", w["ie_toml"], "--out", w["encoder"]],
        ["sample-request", "--model", w["model"], "--ratio", 0.05, "--out", w["request"]],
        ["forget", "--model", w["model"], "--encoder", w["encoder"], "--edges", w["request"]]
        + ["--out", w["forgot"], "--ledger", w["ledger"]],
    ]
    for argv in steps:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([str(a) for a in [*argv, "-q"]])
        assert code == 0, (argv, err.getvalue())
    return w
