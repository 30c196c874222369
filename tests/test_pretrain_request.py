"""Issue 25: the shape of the simulated requests the Influence Encoder is pre-trained on
(``pretrain_request``): the paper's uniform ρ of the edges, or mixed with requests shaped like the
authors' attack on the graph's own lowest-scored edges."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.contracts import tiny_trained_model
from unlearnrec.config import from_dict
from unlearnrec.data.interactions import Interactions
from unlearnrec.data.requests import sample_edges
from unlearnrec.errors import ConfigError
from unlearnrec.unlearn.unlearnrec import UnlearnRec, UnlearnRecConfig
from unlearnrec.unlearn.unlearnrec.pretrain import low_score_request, simulated_request

FAST = dict(epochs=2, batch_size=256, steps_per_epoch=3, lr=1e-2)


def graph_and_scores():
    """3 users x 3 items, 7 edges, and final embeddings with ŷ_ui = ē_u·ē_i = s[u, i]: one-hot user
    rows (d = 3) and item i's row = column i of s."""
    users = np.array([0, 0, 0, 1, 1, 2, 2])
    items = np.array([0, 1, 2, 0, 2, 1, 2])
    s = np.array([[0.9, 0.1, 0.5], [0.3, 0.0, 0.8], [0.0, 0.7, 0.2]], np.float32)  # s[u, i]
    e_bar = torch.cat([torch.eye(3), torch.as_tensor(s.T)])  # ē_u = e_u, ē_i = s[:, i]
    return Interactions(users, items, 3, 3), e_bar


def edges(x: Interactions) -> set[tuple[int, int]]:
    return set(zip(x.users.tolist(), x.items.tolist(), strict=True))


def test_low_score_request_takes_each_nodes_lowest_training_edge():
    train, e_bar = graph_and_scores()
    got = low_score_request(train, e_bar, 1.0, np.random.default_rng(0), chunk=2)  # chunks exercised
    # user 0: items 0 / 1 / 2 score 0.9 / 0.1 / 0.5; user 1: items 0 / 2, 0.3 / 0.8; user 2: 1 / 2, 0.7 / 0.2
    per_user = {(0, 1), (1, 0), (2, 2)}
    # item 0: users 0 / 1, 0.9 / 0.3; item 1: users 0 / 2, 0.1 / 0.7; item 2: users 0 / 1 / 2, 0.5 / 0.8 / 0.2
    per_item = {(1, 0), (0, 1), (2, 2)}
    assert edges(got) == per_user | per_item
    assert len(got) == len(edges(got))  # an edge picked by both sides is taken once
    assert edges(got) <= edges(train)  # edges the graph has, never new ones


def test_low_score_request_share_draws_a_part_and_never_nothing():
    train, e_bar = graph_and_scores()
    full = edges(low_score_request(train, e_bar, 1.0, np.random.default_rng(0)))
    sizes = {len(low_score_request(train, e_bar, 0.5, np.random.default_rng(s))) for s in range(20)}
    assert min(sizes) < len(full) and max(sizes) <= len(full)
    only = low_score_request(train, e_bar, 0.0, np.random.default_rng(0))
    assert edges(only) == {(0, 1)}  # no node drawn: the graph's lowest-scored edge (0.1)


def test_mixed_alternates_random_and_low_score_epochs():
    train, e_bar = graph_and_scores()
    cfg = UnlearnRecConfig(ratio=0.5, pretrain_request="mixed")
    odd = simulated_request(train, e_bar, cfg, 1, np.random.default_rng(0))
    assert len(odd) == round(0.5 * len(train))  # ρ of the edges
    even = simulated_request(train, e_bar, cfg, 2, np.random.default_rng(0))
    assert edges(even) == edges(low_score_request(train, e_bar, 0.5, np.random.default_rng(0)))
    control = UnlearnRecConfig(ratio=0.5, pretrain_request="small")
    small = simulated_request(train, e_bar, control, 2, np.random.default_rng(0))
    assert len(small) == len(even) and edges(small) <= edges(train)  # the size of the low-score request
    assert edges(simulated_request(train, e_bar, control, 1, np.random.default_rng(0))) == edges(odd)
    plain = UnlearnRecConfig(ratio=0.5)
    for epoch in (1, 2):  # the paper's: exactly the former draw (sample_edges), so cached encoders stay valid
        got = simulated_request(train, e_bar, plain, epoch, np.random.default_rng(epoch))
        assert edges(got) == edges(sample_edges(train, 0.5, np.random.default_rng(epoch))) and len(got) == 4


def test_mixed_pretraining_runs_and_differs_from_random():
    model = tiny_trained_model(epochs=4)
    runs = {}
    for shape in ("random", "mixed"):
        m = UnlearnRec(UnlearnRecConfig(**FAST, pretrain_request=shape), seed=0)
        m.prepare(model, model.train)
        runs[shape] = m
    r, x = runs["random"].history, runs["mixed"].history
    assert r[0]["request_edges"] == x[0]["request_edges"]  # epoch 1: the same random draw
    assert x[1]["request_edges"] < r[1]["request_edges"]  # epoch 2: at most one edge per node, not ρ
    assert not torch.equal(runs["random"].encoder.h0, runs["mixed"].encoder.h0)
    assert runs["mixed"].config.pretrain_request == "mixed"


def test_pretrain_request_is_validated():
    with pytest.raises(ConfigError, match="pretrain_request"):
        from_dict(UnlearnRecConfig, {"pretrain_request": "low"}, "unlearnrec")
