"""Immutable user-item interaction sets over a fixed id space."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from unlearnrec.errors import DataError, RequestError


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=np.int64)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class Interactions:
    """A set of (user, item) pairs with a fixed id space.

    ``users`` and ``items`` are read-only int64 arrays of equal length (one entry per edge),
    with ``0 <= users < num_users`` and ``0 <= items < num_items``. Pairs are unique and kept
    sorted by (user, item), so membership is a binary search and CSR is free. Every
    operation returns a new object; the id space never changes (no re-indexing).
    """

    users: np.ndarray
    items: np.ndarray
    num_users: int
    num_items: int

    def __post_init__(self) -> None:
        users = np.asarray(self.users, dtype=np.int64)
        items = np.asarray(self.items, dtype=np.int64)
        object.__setattr__(self, "num_users", int(self.num_users))
        object.__setattr__(self, "num_items", int(self.num_items))
        if users.ndim != 1 or users.shape != items.shape:
            raise DataError(
                f"users and items must be 1-d of equal length, got {users.shape} and {items.shape}"
            )
        if self.num_users < 0 or self.num_items < 0:
            raise DataError("num_users and num_items must be non-negative")
        if len(users):
            if users.min() < 0 or users.max() >= self.num_users:
                bad = int(users[(users < 0) | (users >= self.num_users)][0])
                raise DataError(f"user id {bad} out of range [0, {self.num_users})")
            if items.min() < 0 or items.max() >= self.num_items:
                bad = int(items[(items < 0) | (items >= self.num_items)][0])
                raise DataError(f"item id {bad} out of range [0, {self.num_items})")
            # canonical order: sorted by (user, item). A strictly increasing key also proves the
            # pairs unique, in O(n); only unsorted input pays for a sort.
            keys = users * max(self.num_items, 1) + items
            if not bool(np.all(keys[1:] > keys[:-1])):
                order = np.argsort(keys, kind="stable")
                keys = keys[order]
                users, items = users[order], items[order]
                dup = np.flatnonzero(keys[1:] == keys[:-1])
                if len(dup):
                    k = int(dup[0])
                    raise DataError(f"duplicate interaction (user {users[k]}, item {items[k]})")
        object.__setattr__(self, "users", _frozen(users))
        object.__setattr__(self, "items", _frozen(items))

    # ----------------------------------------------------------------- constructors
    @classmethod
    def from_pairs(
        cls,
        users,
        items,
        num_users: int | None = None,
        num_items: int | None = None,
        dedupe: bool = False,
    ) -> Interactions:
        """Build from parallel id arrays; the id space defaults to max id + 1."""
        users = np.asarray(users, dtype=np.int64).ravel()
        items = np.asarray(items, dtype=np.int64).ravel()
        nu = int(num_users) if num_users is not None else (int(users.max()) + 1 if len(users) else 0)
        ni = int(num_items) if num_items is not None else (int(items.max()) + 1 if len(items) else 0)
        if dedupe and len(users):
            keys = users * max(ni, 1) + items
            _, first = np.unique(keys, return_index=True)
            first.sort()
            users, items = users[first], items[first]
        return cls(users, items, nu, ni)

    @classmethod
    def from_csr(cls, m: sp.spmatrix) -> Interactions:
        """Build from a (num_users x num_items) sparse matrix; nonzeros are interactions."""
        m = sp.csr_matrix(m)
        m.eliminate_zeros()
        m.sum_duplicates()
        rows = np.repeat(np.arange(m.shape[0], dtype=np.int64), np.diff(m.indptr))
        return cls(rows, m.indices.astype(np.int64), m.shape[0], m.shape[1])

    @classmethod
    def empty(cls, num_users: int, num_items: int) -> Interactions:
        z = np.zeros(0, dtype=np.int64)
        return cls(z, z, num_users, num_items)

    # ----------------------------------------------------------------- basic views
    def __len__(self) -> int:
        return len(self.users)

    def __repr__(self) -> str:
        return f"Interactions(n={len(self)}, num_users={self.num_users}, num_items={self.num_items})"

    def keys(self) -> np.ndarray:
        """One int64 key per edge, ``user * num_items + item``: unique and increasing."""
        return self.users * max(self.num_items, 1) + self.items

    def to_csr(self, dtype=np.float32) -> sp.csr_matrix:
        """(num_users x num_items) CSR matrix with ones at interactions, built in O(nnz)."""
        indptr = np.zeros(self.num_users + 1, dtype=np.int64)
        np.cumsum(self.user_degrees(), out=indptr[1:])
        data = np.ones(len(self), dtype=dtype)
        # canonical (user, item) order is already CSR order with sorted indices
        return sp.csr_matrix((data, self.items.copy(), indptr), shape=(self.num_users, self.num_items))

    def user_degrees(self) -> np.ndarray:
        return np.bincount(self.users, minlength=self.num_users)

    def item_degrees(self) -> np.ndarray:
        return np.bincount(self.items, minlength=self.num_items)

    def fingerprint(self) -> str:
        """sha256 over the id space and the sorted edge keys: equal sets give equal prints."""
        h = hashlib.sha256()
        h.update(f"{self.num_users}:{self.num_items}:".encode())
        h.update(self.keys().astype("<i8").tobytes())
        return h.hexdigest()

    def same_space(self, other: Interactions) -> bool:
        return self.num_users == other.num_users and self.num_items == other.num_items

    # ----------------------------------------------------------------- set operations
    def contains(self, users, items) -> np.ndarray:
        """Boolean mask: which of the given (user, item) pairs are in this set (O(q log n))."""
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        if len(self) == 0:
            return np.zeros(len(users), dtype=bool)
        keys = self.keys()  # sorted: canonical order
        q = users * max(self.num_items, 1) + items
        pos = np.minimum(np.searchsorted(keys, q), len(keys) - 1)
        return keys[pos] == q

    def locate(self, edges: Interactions) -> np.ndarray:
        """Positions of ``edges`` in this set; raises :class:`RequestError` if one is absent."""
        if not self.same_space(edges):
            raise RequestError(
                f"request id space ({edges.num_users} users, {edges.num_items} items) differs from "
                f"the data's ({self.num_users}, {self.num_items})"
            )
        if len(edges) == 0:
            return np.zeros(0, dtype=np.int64)
        keys = self.keys()
        q = edges.keys()
        pos = np.minimum(np.searchsorted(keys, q), max(len(keys) - 1, 0))
        found = keys[pos] == q if len(keys) else np.zeros(len(q), dtype=bool)
        if not bool(found.all()):
            k = int(np.flatnonzero(~found)[0])
            raise RequestError(
                f"edge (user {edges.users[k]}, item {edges.items[k]}) is not in the training set"
            )
        return pos

    def drop(self, edges: Interactions, strict: bool = True) -> Interactions:
        """A new set without ``edges``, in O(n). With ``strict``, every dropped edge must be present."""
        if len(edges) == 0:
            if not self.same_space(edges):
                self.locate(edges)
            return self
        if strict:
            pos = self.locate(edges)
        else:
            if not self.same_space(edges):
                self.locate(edges)
            present = self.contains(edges.users, edges.items)
            pos = np.searchsorted(self.keys(), edges.keys()[present])
        keep = np.ones(len(self), dtype=bool)
        keep[pos] = False
        return Interactions(self.users[keep], self.items[keep], self.num_users, self.num_items)

    def union(self, other: Interactions) -> Interactions:
        """Set union (pairs of ``other`` already present are ignored)."""
        if not self.same_space(other):
            raise DataError("cannot union interactions over different id spaces")
        new = ~self.contains(other.users, other.items)
        return Interactions(
            np.concatenate([self.users, other.users[new]]),
            np.concatenate([self.items, other.items[new]]),
            self.num_users,
            self.num_items,
        )

    def intersects(self, other: Interactions) -> int:
        """Number of pairs shared with ``other``."""
        return int(self.contains(other.users, other.items).sum())

    def subset(self, mask_or_index) -> Interactions:
        return Interactions(
            self.users[mask_or_index], self.items[mask_or_index], self.num_users, self.num_items
        )

    def of_users(self, users) -> Interactions:
        """All edges of the given users."""
        return self.subset(np.isin(self.users, np.asarray(users, dtype=np.int64)))

    def of_items(self, items) -> Interactions:
        """All edges of the given items."""
        return self.subset(np.isin(self.items, np.asarray(items, dtype=np.int64)))
