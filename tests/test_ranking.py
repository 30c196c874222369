"""Full-ranking Recall@K / NDCG@K against hand-computed examples; masking; several K; batching."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from unlearnrec.data.interactions import Interactions
from unlearnrec.eval.ranking import evaluate_embeddings, recommend, topk_metrics

# scores = user_emb @ item_emb.T with item_emb = I, so user_emb *is* the score matrix
SCORES = torch.tensor(
    [
        [0.9, 0.8, 0.7, 0.1],  # user 0: ranking 0, 1, 2, 3
        [0.1, 0.2, 0.3, 0.4],  # user 1: ranking 3, 2, 1, 0
        [0.5, 0.5, 0.5, 0.5],  # user 2: no target item -> not evaluated
    ]
)
ITEMS = torch.eye(4)


def inter(pairs, nu=3, ni=4) -> Interactions:
    u, i = zip(*pairs, strict=True)
    return Interactions(np.array(u), np.array(i), nu, ni)


def L(rank: int) -> float:
    """Discount of a 0-based rank."""
    return 1.0 / math.log2(rank + 2)


TARGET = inter([(0, 1), (0, 3), (1, 3)])


def test_hand_computed_recall_and_ndcg():
    m = evaluate_embeddings(SCORES, ITEMS, TARGET, ks=(1, 2))
    assert m["users"] == 2
    # user 0: top-2 = [0, 1], relevant {1, 3}: one hit at rank 1; user 1: top-1 = [3], a hit at rank 0
    assert m["recall@1"] == pytest.approx((0.0 + 1.0) / 2)
    assert m["recall@2"] == pytest.approx((0.5 + 1.0) / 2)
    assert m["ndcg@1"] == pytest.approx((0.0 + 1.0) / 2)
    ndcg0 = L(1) / (L(0) + L(1))
    assert m["ndcg@2"] == pytest.approx((ndcg0 + 1.0) / 2)


def test_training_items_are_masked():
    train = inter([(0, 0), (1, 2)])
    m = evaluate_embeddings(SCORES, ITEMS, TARGET, exclude=[train], ks=(2,))
    # user 0: item 0 masked -> top-2 = [1, 2]: a hit at rank 0; user 1: top-2 = [3, 1]: a hit at rank 0
    assert m["recall@2"] == pytest.approx((0.5 + 1.0) / 2)
    assert m["ndcg@2"] == pytest.approx((L(0) / (L(0) + L(1)) + 1.0) / 2)
    # two exclusion sets are both masked
    m2 = evaluate_embeddings(SCORES, ITEMS, TARGET, exclude=[train, inter([(0, 1)])], ks=(1,))
    # user 0: items 0 and 1 masked -> top-1 = [2]: no hit
    assert m2["recall@1"] == pytest.approx((0.0 + 1.0) / 2)


def test_banned_items_and_user_restriction():
    m = evaluate_embeddings(SCORES, ITEMS, TARGET, ks=(1,), banned_items=np.array([3]))
    assert m["recall@1"] == pytest.approx(0.0)  # user 1's only relevant item is banned for everyone
    only0 = evaluate_embeddings(SCORES, ITEMS, TARGET, ks=(2,), users=np.array([0, 2]))
    assert only0["users"] == 1 and only0["recall@2"] == pytest.approx(0.5)


def test_several_k_equal_separate_calls_and_recall_grows_with_k():
    g = torch.Generator().manual_seed(0)
    ue, ie = torch.randn(30, 8, generator=g), torch.randn(25, 8, generator=g)
    rng = np.random.default_rng(0)
    tgt = Interactions.from_pairs(rng.integers(0, 30, 120), rng.integers(0, 25, 120), 30, 25, dedupe=True)
    both = evaluate_embeddings(ue, ie, tgt, ks=(5, 1, 10))
    for k in (1, 5, 10):
        one = evaluate_embeddings(ue, ie, tgt, ks=(k,))
        assert both[f"recall@{k}"] == pytest.approx(one[f"recall@{k}"])
        assert both[f"ndcg@{k}"] == pytest.approx(one[f"ndcg@{k}"])
    assert both["recall@1"] <= both["recall@5"] <= both["recall@10"]


def test_k_larger_than_the_catalogue_is_clamped():
    m = evaluate_embeddings(SCORES, ITEMS, TARGET, ks=(20,))
    assert m["recall@20"] == pytest.approx(1.0)


@pytest.mark.parametrize("batch", [1, 3, 7, 1000])
def test_batching_invariance(batch):
    g = torch.Generator().manual_seed(1)
    ue, ie = torch.randn(40, 6, generator=g), torch.randn(30, 6, generator=g)
    rng = np.random.default_rng(1)
    tgt = Interactions.from_pairs(rng.integers(0, 40, 150), rng.integers(0, 30, 150), 40, 30, dedupe=True)
    train = Interactions.from_pairs(rng.integers(0, 40, 300), rng.integers(0, 30, 300), 40, 30, dedupe=True)
    train = train.drop(tgt, strict=False)  # masked items are never targets
    ref = evaluate_embeddings(ue, ie, tgt, exclude=[train], ks=(3, 10), batch_size=40)
    got = evaluate_embeddings(ue, ie, tgt, exclude=[train], ks=(3, 10), batch_size=batch)
    for key in ref:
        assert got[key] == pytest.approx(ref[key], abs=1e-6)


def test_topk_metrics_per_user():
    hits = torch.tensor([[1, 0, 1], [0, 0, 0]], dtype=torch.bool)
    out = topk_metrics(hits, torch.tensor([2, 1]), [3])
    assert out["recall@3"].tolist() == pytest.approx([1.0, 0.0])
    assert out["ndcg@3"][0].item() == pytest.approx((L(0) + L(2)) / (L(0) + L(1)))


def test_recommend_masks_seen_items():
    items, scores = recommend(SCORES, ITEMS, [0, 1], k=2, exclude=inter([(0, 0)]))
    assert items.tolist() == [[1, 2], [3, 2]]
    assert scores[0].tolist() == pytest.approx([0.8, 0.7])
