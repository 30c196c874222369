"""Membership-inference metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from unlearnrec.data.interactions import Interactions
from unlearnrec.eval.membership import (
    edge_scores,
    forgetting_metrics,
    ks_statistic,
    mean_prob,
    membership_auc,
    mi_bf,
    mi_ng,
    sample_non_edges,
    score_stats,
    wasserstein_1d,
)


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_edge_scores_and_mean_prob():
    ue = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    ie = torch.tensor([[3.0, 1.0], [0.0, -1.0]])
    s = edge_scores(ue, ie, [0, 1, 1], [0, 0, 1])
    assert s.tolist() == [3.0, 2.0, -2.0]
    assert mean_prob(torch.tensor([0.0, 0.0])) == pytest.approx(0.5)
    assert mean_prob(torch.zeros(0)) == 0.0


def test_mi_bf_and_mi_ng_hand_values():
    before = torch.tensor([0.0, 0.0])  # p = 0.5
    after = torch.full((2,), math.log(1 / 3))  # p = 0.25
    assert mi_bf(before, after) == pytest.approx(2.0)
    assert mi_ng(torch.zeros(4), after) == pytest.approx(2.0)
    assert mi_bf(after, before) == pytest.approx(0.5)


def test_score_stats():
    st = score_stats(torch.tensor([1.0, 2.0, 3.0]))
    assert st["n"] == 3 and st["mean"] == pytest.approx(2.0) and st["var"] == pytest.approx(2 / 3)
    assert st["mean_prob"] == pytest.approx((sig(1) + sig(2) + sig(3)) / 3)
    assert math.isnan(score_stats(torch.zeros(0))["mean"])


def test_membership_auc_hand_values():
    # pairs (3,2) (3,0) (1,2) (1,0): three of four members above
    assert membership_auc(torch.tensor([3.0, 1.0]), torch.tensor([2.0, 0.0])) == pytest.approx(0.75)
    assert membership_auc([1.0], [1.0]) == pytest.approx(0.5)  # a tie counts half
    assert membership_auc([1.0, 1.0], [1.0, 0.0]) == pytest.approx(0.75)
    assert membership_auc([0.0, 0.1], [5.0, 6.0]) == 0.0
    assert math.isnan(membership_auc([], [1.0]))


def test_membership_auc_matches_pairwise_count():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 5, 40).astype(float), rng.integers(0, 5, 30).astype(float)
    pairwise = ((a[:, None] > b[None, :]) + 0.5 * (a[:, None] == b[None, :])).mean()
    assert membership_auc(a, b) == pytest.approx(pairwise)


def test_wasserstein_hand_values():
    assert wasserstein_1d([0.0, 1.0], [0.0, 3.0]) == pytest.approx(1.0)  # mean |sorted a - sorted b|
    # F_a = 1 from 0; F_b = 0.5 on [1, 3): ∫_0^1 1 + ∫_1^3 0.5 = 2
    assert wasserstein_1d([0.0], [1.0, 3.0]) == pytest.approx(2.0)
    assert wasserstein_1d([2.0, 2.0], [2.0]) == 0.0
    assert wasserstein_1d(torch.tensor([1.0]), torch.tensor([4.0])) == pytest.approx(3.0)


def test_wasserstein_matches_scipy():
    from scipy.stats import wasserstein_distance

    rng = np.random.default_rng(1)
    a, b = rng.normal(size=37), rng.normal(1.0, 2.0, size=23)
    assert wasserstein_1d(a, b) == pytest.approx(wasserstein_distance(a, b))


def test_ks_statistic_hand_values():
    assert ks_statistic([0.0, 1.0], [0.5, 2.0]) == pytest.approx(0.5)
    assert ks_statistic([0.0, 1.0], [0.0, 1.0]) == 0.0
    assert ks_statistic([0.0], [5.0]) == 1.0


def test_sample_non_edges_are_non_edges():
    known = Interactions.from_pairs(np.repeat(np.arange(10), 5), np.tile(np.arange(5), 10), 10, 8)
    users, items = sample_non_edges(known, np.arange(10), seed=0)
    assert not known.contains(users, items).any()
    assert (items >= 5).all()


def test_forgetting_metrics_hand_example():
    # one user, three items; known edges (0,0) and (0,1), so the only non-edge is (0,2)
    known = Interactions.from_pairs([0, 0], [0, 1], 1, 3)
    forgotten = Interactions.from_pairs([0], [0], 1, 3)
    retained = Interactions.from_pairs([0], [1], 1, 3)
    before = (torch.tensor([[2.0]]), torch.tensor([[1.0], [1.0], [0.0]]))  # ŷ_00 = 2
    after = (torch.tensor([[1.0]]), torch.tensor([[-1.0], [1.0], [0.0]]))  # ŷ_00 = -1, ŷ_02 = 0
    ref = (torch.tensor([[1.0]]), torch.tensor([[0.0], [0.0], [0.0]]))  # ŷ_00 = 0
    m = forgetting_metrics(before, after, forgotten, known, retained=retained, reference=ref, seed=0)
    assert m["mi_bf"] == pytest.approx(sig(2) / sig(-1))
    assert m["mi_ng"] == pytest.approx(0.5 / sig(-1))
    assert m["mi_ng_before"] == pytest.approx(0.5 / sig(2))
    assert m["auc"] == 0.0 and m["auc_before"] == 1.0
    assert m["forgotten_mean"] == pytest.approx(-1.0) and m["forgotten_var"] == 0.0
    assert m["negative_mean"] == 0.0
    assert m["retained_mean"] == pytest.approx(1.0)
    assert m["w1_to_ref"] == pytest.approx(0.5 - sig(-1))
    assert m["ks_to_ref"] == 1.0
