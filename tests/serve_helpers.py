"""Shared pieces of the service tests: cached tiny/ML-100K artifacts and database URLs.

Artifacts (a trained model and its pre-trained Influence Encoder) are built once per test
session in a temporary directory (removed at exit) and reused by every test that asks.
PostgreSQL: ``UNLEARNREC_TEST_PG`` names a server URL (``postgresql+psycopg://user@host:port/db``)
where a fresh database is created per test and dropped after; without it the PostgreSQL variants
skip locally and fail under CI (``CI=true``: ``.ci/run`` starts a server and sets the URL).
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import tempfile
import uuid
from functools import cache
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("sqlalchemy")

from unlearnrec.unlearn.unlearnrec import UnlearnRec, UnlearnRecConfig  # noqa: E402

PG_ENV = "UNLEARNREC_TEST_PG"
BACKENDS = ["sqlite", "postgresql"]


@cache
def _session_dir() -> Path:
    d = Path(tempfile.mkdtemp(prefix="unlearnrec-serve-tests-"))
    atexit.register(shutil.rmtree, d, True)
    return d


@cache
def tiny_artifacts() -> tuple[Path, Path]:
    """(model dir, encoder dir): a tiny LightGCN on 60 users x 40 items and its encoder."""
    from tests.contracts import tiny_trained_model

    d = _session_dir() / "tiny"
    model = tiny_trained_model(epochs=8)
    model.save(d / "model")
    method = UnlearnRec(UnlearnRecConfig(epochs=2, batch_size=256, steps_per_epoch=3, lr=1e-2), seed=0)
    method.prepare(model, model.train)
    method.save_prepared(d / "encoder")
    return d / "model", d / "encoder"


@cache
def ml100k_artifacts(data_dir: str) -> tuple[Path, Path]:
    """(model dir, encoder dir) on ML-100K: LightGCN dim 32, 3 epochs; encoder 2 short epochs."""
    import torch

    from unlearnrec.backbones import build_backbone
    from unlearnrec.data.datasets import load_dataset
    from unlearnrec.data.graph import Graph
    from unlearnrec.model import TrainedModel
    from unlearnrec.train.loop import TrainConfig, fit

    d = _session_dir() / "ml100k"
    data = load_dataset("ml-100k", data_dir, val_ratio=0.1, seed=0)
    graph = Graph.from_interactions(data.train)
    bb = build_backbone(
        "lightgcn", data.num_users, data.num_items, {"dim": 32}, generator=torch.Generator().manual_seed(0)
    )
    fit(bb, graph, TrainConfig(epochs=3, batch_size=2048, lr=1e-2, eval_every=1, patience=0, seed=0))
    model = TrainedModel(
        bb,
        graph,
        "lightgcn",
        "ml-100k",
        {"seed": 0, "val_ratio": 0.1},
        meta={"original_train_fingerprint": data.train.fingerprint()},
    )
    model.save(d / "model")
    method = UnlearnRec(UnlearnRecConfig(epochs=2, batch_size=4096, steps_per_epoch=5, lr=1e-2), seed=0)
    method.prepare(model, model.train)
    method.save_prepared(d / "encoder")
    return d / "model", d / "encoder"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_server_url() -> str | None:
    url = os.environ.get(PG_ENV)
    if not url:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must run the PostgreSQL tests: set {PG_ENV} (.ci/run starts a server)")
        pytest.skip(f"no PostgreSQL server ({PG_ENV} unset)")
    return url


def pg_database():
    """Generator: a fresh PostgreSQL database URL, dropped afterwards."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    server = make_url(pg_server_url())
    name = f"ulr_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def db_url_for(backend: str, tmp_path: Path):
    """Generator of a database URL of ``backend`` (``sqlite`` in ``tmp_path``, or a fresh PG database)."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.sqlite'}"
    else:
        yield from pg_database()
