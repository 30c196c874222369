"""Vectorised BPR triple sampling (one pass over the training edges, uniform negatives) and its ``Batch``."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from unlearnrec.data.interactions import Interactions


def share(n: int, rank: int, world: int) -> slice:
    """The contiguous slice of ``n`` rows that ``rank`` of ``world`` takes (sizes differ by at most 1)."""
    return slice(n * rank // world, n * (rank + 1) // world)


@dataclass(frozen=True)
class Batch:
    """A mini-batch of BPR triples: users (B,), positive items (B,), negative items (B,), int64.

    ``part = (index, count)``: the loss of this batch is computed for part ``index`` of ``count``
    (data-parallel training, ``unlearnrec.train.distributed``). A backbone's loss terms of the
    ``count`` parts add up to the terms of the whole batch: the per-row terms (BPR, L2) take the
    part's rows (:meth:`local`) divided by the whole batch size, an InfoNCE the part's share of
    anchor rows against all of the batch's nodes. ``(0, 1)``, the default, is the whole batch.
    """

    users: torch.Tensor
    pos: torch.Tensor
    neg: torch.Tensor
    part: tuple[int, int] = (0, 1)

    def __len__(self) -> int:
        return int(self.users.shape[0])

    @property
    def whole(self) -> bool:
        """Whether the loss is computed for the whole batch (one part)."""
        return self.part[1] == 1

    def to(self, device) -> Batch:
        return Batch(self.users.to(device), self.pos.to(device), self.neg.to(device), self.part)

    def parted(self, index: int, count: int) -> Batch:
        """The same batch, its loss to be computed for part ``index`` of ``count``."""
        if not 0 <= index < count:
            raise ValueError(f"part index must be in [0, {count}), got {index}")
        return Batch(self.users, self.pos, self.neg, (int(index), int(count)))

    def rows(self, n: int | None = None) -> slice:
        """This part's contiguous share of ``n`` rows (default: of the batch's triples)."""
        return share(len(self) if n is None else n, *self.part)

    def local(self) -> Batch:
        """The triples of this part (the whole batch when ``whole``)."""
        if self.whole:
            return self
        sl = self.rows()
        return Batch(self.users[sl], self.pos[sl], self.neg[sl])


def sample_negatives(
    train: Interactions, users: np.ndarray, rng: np.random.Generator, max_rounds: int = 50
) -> np.ndarray:
    """One uniform negative item per user, rejecting the user's training items.

    Vectorised rejection: draw for all, redraw only the collisions (membership by binary search
    on the sorted edge keys). A user who has interacted with every item keeps a random item.
    """
    n_items = train.num_items
    neg = rng.integers(0, n_items, size=len(users), dtype=np.int64)
    todo = np.flatnonzero(train.contains(users, neg))
    for _ in range(max_rounds):
        if len(todo) == 0:
            break
        neg[todo] = rng.integers(0, n_items, size=len(todo), dtype=np.int64)
        todo = todo[train.contains(users[todo], neg[todo])]
    return neg


def bpr_batches(
    train: Interactions,
    batch_size: int,
    rng: np.random.Generator,
    device: torch.device | str = "cpu",
    max_edges: int | None = None,
) -> Iterator[Batch]:
    """Shuffle all training edges once and yield (user, positive, negative) batches; with
    ``max_edges``, only the first ``max_edges`` edges of the shuffle (negatives drawn for those only)."""
    perm = rng.permutation(len(train))[:max_edges]
    users = train.users[perm]
    pos = train.items[perm]
    neg = sample_negatives(train, users, rng)
    for s in range(0, len(perm), batch_size):
        sl = slice(s, s + batch_size)
        yield Batch(
            torch.from_numpy(users[sl]).to(device),
            torch.from_numpy(pos[sl]).to(device),
            torch.from_numpy(neg[sl]).to(device),
        )
