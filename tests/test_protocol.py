"""The adversarial protocol: lowest-scoring free items/users, seeded subsets, the on-disk cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unlearnrec.data.interactions import Interactions
from unlearnrec.errors import DataError
from unlearnrec.experiments.protocol import AttackConfig, adversarial_edges, adversarial_sides, build_attack


def pairs(inter: Interactions) -> set[tuple[int, int]]:
    return set(zip(inter.users.tolist(), inter.items.tolist(), strict=True))


def test_hand_example_users_and_items():
    ue = torch.tensor([[1.0], [-1.0]])
    ie = torch.tensor([[1.0], [2.0], [-3.0]])
    # user 0 scores [1, 2, -3] but already has item 2 -> item 0; user 1 scores [-1, -2, 3] -> item 1
    train = Interactions.from_pairs([0], [2], 2, 3)
    adv = adversarial_edges(ue, ie, [train], AttackConfig(user_ratio=1.0, item_ratio=0.0), seed=0)
    assert pairs(adv) == {(0, 0), (1, 1)}
    # item side: item 0 -> user 1 (score -1), item 1 -> user 1 (-2), item 2 -> user 0 is taken -> user 1 (3)
    adv = adversarial_edges(ue, ie, [train], AttackConfig(user_ratio=0.0, item_ratio=1.0), seed=0)
    assert pairs(adv) == {(1, 0), (1, 1), (1, 2)}
    # both sides: duplicates merged
    adv = adversarial_edges(ue, ie, [train], AttackConfig(user_ratio=1.0, item_ratio=1.0), seed=0)
    assert pairs(adv) == {(0, 0), (1, 0), (1, 1), (1, 2)}
    # the two sides apart (what forgetting_sides.py measures separately); (1, 1) is on both
    by_users, by_items = adversarial_sides(
        ue, ie, [train], AttackConfig(user_ratio=1.0, item_ratio=1.0), seed=0
    )
    assert pairs(by_users) == {(0, 0), (1, 1)} and pairs(by_items) == {(1, 0), (1, 1), (1, 2)}


def test_val_and_test_edges_are_avoided_and_full_users_skipped():
    ue = torch.tensor([[1.0], [1.0]])
    ie = torch.tensor([[1.0], [2.0], [3.0]])
    train = Interactions.from_pairs([0, 1], [1, 0], 2, 3)
    val = Interactions.from_pairs([0], [0], 2, 3)
    test = Interactions.from_pairs([0, 1], [2, 1], 2, 3)
    adv = adversarial_edges(ue, ie, [train, val, test], AttackConfig(), seed=0)
    assert pairs(adv) == {(1, 2)}  # user 0 has no free item left


def test_matches_brute_force_and_is_batched(tiny):
    g = torch.Generator().manual_seed(0)
    ue, ie = torch.randn(tiny.num_users, 8, generator=g), torch.randn(tiny.num_items, 8, generator=g)
    cfg = AttackConfig(user_ratio=0.5, item_ratio=0.25, batch_size=7)
    adv = adversarial_edges(ue, ie, [tiny], cfg, seed=3)
    s = (ue @ ie.T).numpy()
    dense = tiny.to_csr().toarray() > 0
    masked = np.where(dense, np.inf, s)
    rng = np.random.default_rng(3)
    users = np.sort(rng.choice(tiny.num_users, 30, replace=False))
    items = np.sort(rng.choice(tiny.num_items, 10, replace=False))
    expect = {(int(u), int(masked[u].argmin())) for u in users}
    expect |= {(int(masked[:, i].argmin()), int(i)) for i in items}
    assert pairs(adv) == expect
    assert not tiny.contains(adv.users, adv.items).any()
    # seeded: same seed, same edges; another seed, another subset
    assert adversarial_edges(ue, ie, [tiny], cfg, seed=3).fingerprint() == adv.fingerprint()
    assert adversarial_edges(ue, ie, [tiny], cfg, seed=4).fingerprint() != adv.fingerprint()


def test_shape_mismatch_and_bad_ratio():
    train = Interactions.from_pairs([0], [0], 2, 3)
    with pytest.raises(DataError, match="do not match"):
        adversarial_edges(torch.zeros(3, 1), torch.zeros(3, 1), [train], AttackConfig(), seed=0)
    with pytest.raises(ValueError, match="user_ratio"):
        AttackConfig(user_ratio=1.5)


def test_build_attack_caches_on_disk(tmp_path, tiny_split):
    train, val, test = tiny_split
    g = torch.Generator().manual_seed(1)
    ue, ie = torch.randn(train.num_users, 4, generator=g), torch.randn(train.num_items, 4, generator=g)
    cfg = AttackConfig(user_ratio=0.5)
    a = build_attack(ue, ie, train, [val, test], cfg, 0, dataset="tiny", clean_id="m1", cache_dir=tmp_path)
    assert len(a.edges) == 30
    assert a.train.fingerprint() == train.union(a.edges).fingerprint()
    assert len(a.train) == len(train) + len(a.edges)
    for other in (val, test):
        assert not other.contains(a.edges.users, a.edges.items).any()
    entries = list(tmp_path.iterdir())
    assert len(entries) == 1 and (entries[0] / "edges.npz").is_file() and (entries[0] / "meta.json").is_file()
    # a second call reads the cache: different embeddings, same edges
    b = build_attack(
        ue * 0 + 1, ie, train, [val, test], cfg, 0, dataset="tiny", clean_id="m1", cache_dir=tmp_path
    )
    assert b.edges.fingerprint() == a.edges.fingerprint() and b.meta == a.meta
    # another seed or ratio is another entry
    build_attack(ue, ie, train, [val, test], cfg, 1, dataset="tiny", clean_id="m1", cache_dir=tmp_path)
    build_attack(
        ue, ie, train, [val, test], AttackConfig(0.25), 0, dataset="tiny", clean_id="m1", cache_dir=tmp_path
    )
    assert len(list(tmp_path.iterdir())) == 3
    assert not any(p.name.startswith(".") for p in tmp_path.rglob("*"))


@pytest.mark.realdata
def test_attack_on_ml100k(realdata):
    from unlearnrec.data.datasets import load_dataset

    data = load_dataset("ml-100k", realdata)
    g = torch.Generator().manual_seed(0)
    ue = torch.randn(data.num_users, 16, generator=g)
    ie = torch.randn(data.num_items, 16, generator=g)
    cfg = AttackConfig(user_ratio=1.0, item_ratio=0.1, batch_size=256)
    att = build_attack(ue, ie, data.train, [data.val, data.test], cfg, 0, dataset="ml-100k")
    assert data.num_users <= len(att.edges) <= data.num_users + int(round(0.1 * data.num_items))
    for split in (data.train, data.val, data.test):
        assert not split.contains(att.edges.users, att.edges.items).any()
    assert len(att.train) == len(data.train) + len(att.edges)
    # every user's adversarial item is its lowest-scoring free item
    u = int(att.edges.users[0])
    s = (ue[u] @ ie.T).clone()
    for split in (data.train, data.val, data.test):
        s[torch.from_numpy(split.of_users([u]).items.copy())] = float("inf")
    assert int(s.argmin()) in att.edges.of_users([u]).items
