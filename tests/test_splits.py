"""Seeded per-user splits: disjoint, exact per-user sizes, reproducible, nobody loses all training edges."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unlearnrec.data.interactions import Interactions
from unlearnrec.data.splits import check_disjoint, holdout, split_fractions
from unlearnrec.errors import DataError


def random_interactions(seed: int, nu: int = 40, ni: int = 30, density: float = 0.3) -> Interactions:
    rng = np.random.default_rng(seed)
    m = rng.random((nu, ni)) < density
    m[np.arange(nu), rng.integers(0, ni, nu)] = True  # everyone has an edge
    u, i = np.nonzero(m)
    return Interactions(u, i, nu, ni)


@st.composite
def cases(draw):
    seed = draw(st.integers(0, 2**16))
    nu, ni = draw(st.integers(1, 25)), draw(st.integers(1, 25))
    density = draw(st.floats(0.02, 1.0))
    return random_interactions(seed, nu, ni, density), draw(st.integers(0, 2**31 - 1))


FRACTIONS = (0.7, 0.1, 0.2)


def test_parts_partition_the_input(tiny):
    parts = split_fractions(tiny, FRACTIONS, seed=0)
    assert len(parts) == 3 and sum(len(p) for p in parts) == len(tiny)
    check_disjoint(*parts)
    union = parts[0].union(parts[1]).union(parts[2])
    assert union.fingerprint() == tiny.fingerprint()
    assert all(p.same_space(tiny) for p in parts)


def test_per_user_sizes_are_exact(tiny):
    """test = floor(0.2 d), val = floor(0.3 d) - test, train = the rest (both capped at d - 1)."""
    train, val, test = split_fractions(tiny, FRACTIONS, seed=1)
    d = tiny.user_degrees()
    exp_test = np.minimum((d * 2) // 10, np.maximum(d - 1, 0))
    exp_vt = np.minimum((d * 3) // 10, np.maximum(d - 1, 0))
    assert np.array_equal(test.user_degrees(), exp_test)
    assert np.array_equal(val.user_degrees(), exp_vt - exp_test)
    assert np.array_equal(train.user_degrees(), d - exp_vt)


def test_overall_fractions_are_close():
    inter = random_interactions(0, nu=200, ni=100, density=0.3)
    train, val, test = split_fractions(inter, FRACTIONS, seed=0)
    n = len(inter)
    assert (
        abs(len(test) / n - 0.2) < 0.02
        and abs(len(val) / n - 0.1) < 0.02
        and abs(len(train) / n - 0.7) < 0.03
    )


def test_seeding_is_reproducible_and_seed_matters(tiny):
    a = split_fractions(tiny, FRACTIONS, seed=7)
    b = split_fractions(tiny, FRACTIONS, seed=7)
    c = split_fractions(tiny, FRACTIONS, seed=8)
    assert [p.fingerprint() for p in a] == [p.fingerprint() for p in b]
    assert a[2].fingerprint() != c[2].fingerprint()


def test_single_edge_users_keep_their_edge_in_train():
    inter = Interactions(np.array([0, 1, 1, 2]), np.array([0, 0, 1, 1]), 4, 2)  # user 3 has none
    for seed in range(5):
        train, val, test = split_fractions(inter, FRACTIONS, seed=seed)
        assert (train.user_degrees()[:3] >= 1).all() and train.user_degrees()[3] == 0
        assert len(val) + len(test) == len(inter) - len(train)


def test_holdout(tiny):
    rest, held = holdout(tiny, 0.1, seed=3)
    assert len(rest) + len(held) == len(tiny) and rest.intersects(held) == 0
    assert (rest.user_degrees() >= 1).all()
    d = tiny.user_degrees()
    assert np.array_equal(held.user_degrees(), np.minimum(d // 10, d - 1))
    rest2, held2 = holdout(tiny, 0.1, seed=3)
    assert held2.fingerprint() == held.fingerprint()


@pytest.mark.parametrize("fractions", [(0.5, 0.6), (0.7, -0.1, 0.4), (0.3, 0.3, 0.3)])
def test_bad_fractions(tiny, fractions):
    with pytest.raises(DataError, match="fractions"):
        split_fractions(tiny, fractions, seed=0)


def test_check_disjoint_reports_overlap():
    a = Interactions(np.array([0, 1]), np.array([0, 1]), 2, 2)
    b = Interactions(np.array([1]), np.array([1]), 2, 2)
    c = Interactions(np.array([1]), np.array([0]), 2, 2)
    check_disjoint(a, c)
    with pytest.raises(DataError, match="splits 0 and 2 share 1 interactions"):
        check_disjoint(a, c, b)


def test_empty_input():
    parts = split_fractions(Interactions.empty(3, 3), FRACTIONS, seed=0)
    assert [len(p) for p in parts] == [0, 0, 0]


@settings(max_examples=60, deadline=None)
@given(cases(), st.sampled_from([(0.7, 0.1, 0.2), (0.8, 0.2), (0.5, 0.25, 0.25), (1.0, 0.0, 0.0)]))
def test_split_properties(case, fractions):
    inter, seed = case
    parts = split_fractions(inter, fractions, seed)
    check_disjoint(*parts)
    assert sum(len(p) for p in parts) == len(inter)
    d = inter.user_degrees()
    train_deg = parts[0].user_degrees()
    assert np.array_equal(train_deg >= 1, d >= 1)  # every user with an edge keeps one for training
    # each later part holds floor-rounded shares of every user's edges
    tail = 1.0 - np.cumsum(fractions)[:-1]
    for k in range(1, len(fractions)):
        after_k = sum(p.user_degrees() for p in parts[k:])
        exp = np.minimum(np.floor(d * tail[k - 1] + 1e-9).astype(np.int64), np.maximum(d - 1, 0))
        assert np.array_equal(after_k, exp)
    again = split_fractions(inter, fractions, seed)
    assert [p.fingerprint() for p in again] == [p.fingerprint() for p in parts]
