"""benchmarks/ssl_balance.py: the SSL/BPR gradient ratio moves with the inverse square of E⁰'s scale."""

import numpy as np
import pytest
import torch

from unlearnrec.backbones import build_backbone
from unlearnrec.data.graph import Graph
from unlearnrec.data.sampling import bpr_batches

from .conftest import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("ssl_balance")


def test_ratio_grows_as_the_init_shrinks(bench, tiny_dataset):
    """InfoNCE's gradient ~ 1/‖z‖, BPR's ~ ‖z‖: a 5x smaller init makes SSL pull ~25x harder."""
    graph = Graph.from_interactions(tiny_dataset.train)
    batch = next(bpr_batches(tiny_dataset.train, 64, np.random.default_rng(0)))
    n_u, n_i = tiny_dataset.num_users, tiny_dataset.num_items

    def ratio(std):
        cfg = {"dim": 16, "init_std": std, **bench.SGL_UR}
        net = build_backbone("sgl", n_u, n_i, cfg, generator=torch.Generator().manual_seed(0))
        return bench.ratio(net, graph, batch, seed=0)

    assert 10 < ratio(0.02) / ratio(0.1) < 60


def test_prints_every_setting_for_both_inits(bench, tiny_dir, capsys):
    bench.main(["--dataset", str(tiny_dir), "--dim", "8", "--batch-size", "64", "--batches", "2"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| S")]
    assert len(rows) == 2 * len(bench.SETTINGS)
    assert all(float(r.split("|")[4]) > 0 for r in rows)
    assert rows[0].endswith("| – |") and rows[-1].split("|")[5].strip() != "–"  # ε share: SimGCL only
