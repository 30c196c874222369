"""Interactions: a fixed id space, canonical order, no duplicates, set operations, immutability."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unlearnrec.data.interactions import Interactions
from unlearnrec.errors import DataError, RequestError

from .conftest import three_edge


def pairs(inter: Interactions) -> list[tuple[int, int]]:
    return list(zip(inter.users.tolist(), inter.items.tolist(), strict=True))


@st.composite
def interaction_sets(draw, max_users: int = 8, max_items: int = 8):
    nu = draw(st.integers(1, max_users))
    ni = draw(st.integers(1, max_items))
    edges = draw(st.sets(st.tuples(st.integers(0, nu - 1), st.integers(0, ni - 1)), max_size=nu * ni))
    edges = list(edges)
    draw(st.randoms(use_true_random=False)).shuffle(edges)
    u = np.array([e[0] for e in edges], dtype=np.int64)
    i = np.array([e[1] for e in edges], dtype=np.int64)
    return Interactions(u, i, nu, ni), set(edges)


# ----------------------------------------------------------------------------- construction
def test_construction_sorts_into_canonical_order():
    inter = Interactions(np.array([2, 0, 1, 0]), np.array([0, 3, 1, 1]), 3, 4)
    assert pairs(inter) == [(0, 1), (0, 3), (1, 1), (2, 0)]
    assert inter.users.dtype == np.int64 and inter.items.dtype == np.int64
    assert (inter.num_users, inter.num_items, len(inter)) == (3, 4, 4)
    assert inter.keys().tolist() == [1, 3, 5, 8]


def test_id_space_is_kept_even_when_unused():
    inter = Interactions(np.array([0]), np.array([0]), 10, 20)
    assert (inter.num_users, inter.num_items) == (10, 20)
    assert inter.to_csr().shape == (10, 20)
    assert inter.user_degrees().tolist() == [1] + [0] * 9


def test_duplicates_are_rejected():
    with pytest.raises(DataError, match=r"duplicate interaction \(user 1, item 2\)"):
        Interactions(np.array([1, 0, 1]), np.array([2, 0, 2]), 2, 3)


def test_from_pairs_dedupe_and_default_space():
    inter = Interactions.from_pairs([1, 0, 1, 3], [2, 0, 2, 1], dedupe=True)
    assert (inter.num_users, inter.num_items) == (4, 3)
    assert pairs(inter) == [(0, 0), (1, 2), (3, 1)]
    with pytest.raises(DataError, match="duplicate"):
        Interactions.from_pairs([1, 1], [2, 2])


@pytest.mark.parametrize(
    "u, i, nu, ni, match",
    [
        ([0, 3], [0, 0], 3, 2, r"user id 3 out of range \[0, 3\)"),
        ([0, -1], [0, 0], 3, 2, r"user id -1 out of range"),
        ([0, 1], [0, 2], 3, 2, r"item id 2 out of range \[0, 2\)"),
        ([0, 1], [0], 3, 2, "equal length"),
        ([], [], -1, 2, "non-negative"),
    ],
)
def test_bad_construction(u, i, nu, ni, match):
    with pytest.raises(DataError, match=match):
        Interactions(np.array(u, dtype=np.int64), np.array(i, dtype=np.int64), nu, ni)


def test_empty():
    e = Interactions.empty(4, 5)
    assert len(e) == 0 and e.to_csr().nnz == 0 and e.contains([0], [0]).tolist() == [False]
    assert e.fingerprint() == Interactions.empty(4, 5).fingerprint()
    assert e.fingerprint() != Interactions.empty(4, 6).fingerprint()


# ----------------------------------------------------------------------------- immutability
def test_immutable():
    inter = three_edge()
    with pytest.raises(ValueError):
        inter.users[0] = 1
    with pytest.raises(ValueError):
        inter.items[0] = 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        inter.num_users = 5


def test_input_arrays_are_not_aliased():
    u, i = np.array([1, 0]), np.array([0, 1])
    inter = Interactions(u, i, 2, 2)
    u[0] = 0
    assert pairs(inter) == [(0, 1), (1, 0)]


def test_operations_return_new_objects_and_leave_input_alone():
    inter = three_edge()
    before = inter.fingerprint()
    dropped = inter.drop(Interactions(np.array([0]), np.array([1]), 2, 2))
    merged = inter.union(Interactions(np.array([1]), np.array([0]), 2, 2))
    assert inter.fingerprint() == before and len(inter) == 3
    assert pairs(dropped) == [(0, 0), (1, 1)] and pairs(merged) == [(0, 0), (0, 1), (1, 0), (1, 1)]


# ----------------------------------------------------------------------------- to_csr
def test_to_csr():
    inter = Interactions(np.array([0, 2, 2]), np.array([1, 0, 3]), 3, 4)
    m = inter.to_csr()
    assert m.shape == (3, 4) and m.dtype == np.float32 and m.has_sorted_indices
    assert m.toarray().tolist() == [[0, 1, 0, 0], [0, 0, 0, 0], [1, 0, 0, 1]]
    assert Interactions.from_csr(m).fingerprint() == inter.fingerprint()
    assert inter.to_csr(dtype=np.float64).dtype == np.float64


@settings(max_examples=60, deadline=None)
@given(interaction_sets())
def test_csr_roundtrip_property(case):
    inter, edges = case
    m = inter.to_csr()
    assert set(zip(*m.nonzero(), strict=True)) == edges
    assert Interactions.from_csr(m).fingerprint() == inter.fingerprint()
    assert inter.user_degrees().sum() == len(edges) == inter.item_degrees().sum()


# ----------------------------------------------------------------------------- lookups
def test_contains_and_locate():
    inter = three_edge()
    assert inter.contains([0, 1, 1, 0], [1, 0, 1, 0]).tolist() == [True, False, True, True]
    q = Interactions(np.array([1, 0]), np.array([1, 0]), 2, 2)
    pos = inter.locate(q)
    assert pos.tolist() == [0, 2]  # q is canonical: (0,0) then (1,1)
    assert inter.users[pos].tolist() == q.users.tolist() and inter.items[pos].tolist() == q.items.tolist()
    with pytest.raises(RequestError, match=r"edge \(user 1, item 0\) is not in the training set"):
        inter.locate(Interactions(np.array([1]), np.array([0]), 2, 2))
    with pytest.raises(RequestError, match="id space"):
        inter.locate(Interactions(np.array([0]), np.array([0]), 3, 2))
    assert inter.locate(Interactions.empty(2, 2)).tolist() == []


def test_drop_strict_and_lenient():
    inter = three_edge()
    absent = Interactions(np.array([1, 0]), np.array([0, 0]), 2, 2)
    with pytest.raises(RequestError):
        inter.drop(absent)
    assert pairs(inter.drop(absent, strict=False)) == [(0, 1), (1, 1)]
    assert inter.drop(Interactions.empty(2, 2)) is inter
    with pytest.raises(RequestError, match="id space"):
        inter.drop(Interactions.empty(3, 2))
    assert len(inter.drop(inter)) == 0


def test_union_requires_same_space():
    with pytest.raises(DataError, match="different id spaces"):
        three_edge().union(Interactions.empty(3, 2))


def test_subsets_of_users_and_items():
    inter = Interactions(np.array([0, 0, 1, 2, 2]), np.array([0, 2, 1, 0, 2]), 3, 3)
    assert pairs(inter.of_users([2])) == [(2, 0), (2, 2)]
    assert pairs(inter.of_items([0, 1])) == [(0, 0), (1, 1), (2, 0)]
    assert inter.of_users([0]).num_users == 3  # the id space never shrinks
    assert inter.intersects(inter.of_items([2])) == 2


@settings(max_examples=60, deadline=None)
@given(interaction_sets(), st.data())
def test_set_operations_property(case, data):
    inter, edges = case
    mask = np.array(data.draw(st.lists(st.booleans(), min_size=len(inter), max_size=len(inter))), dtype=bool)
    part = inter.subset(mask)
    rest = inter.drop(part)
    assert set(pairs(rest)) == edges - set(pairs(part))
    assert rest.intersects(part) == 0
    assert rest.union(part).fingerprint() == inter.fingerprint()
    assert part.union(rest).fingerprint() == inter.fingerprint()
    assert inter.contains(part.users, part.items).all()
    assert not rest.contains(part.users, part.items).any()
    assert np.array_equal(inter.locate(part), np.flatnonzero(mask))
    keys = rest.keys()
    assert np.all(keys[1:] > keys[:-1])  # canonical order is kept


# ----------------------------------------------------------------------------- fingerprint
@settings(max_examples=40, deadline=None)
@given(interaction_sets(), st.randoms(use_true_random=False))
def test_fingerprint_ignores_input_order(case, rnd):
    inter, edges = case
    shuffled = list(edges)
    rnd.shuffle(shuffled)
    u = np.array([e[0] for e in shuffled], dtype=np.int64)
    i = np.array([e[1] for e in shuffled], dtype=np.int64)
    assert Interactions(u, i, inter.num_users, inter.num_items).fingerprint() == inter.fingerprint()


def test_fingerprint_distinguishes_sets_and_spaces():
    a = three_edge()
    assert a.fingerprint() == three_edge().fingerprint()
    assert a.fingerprint() != a.drop(Interactions(np.array([0]), np.array([0]), 2, 2)).fingerprint()
    assert a.fingerprint() != Interactions(a.users, a.items, 3, 2).fingerprint()
    assert len(a.fingerprint()) == 64
