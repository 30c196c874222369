"""Vectorised BPR triple sampling: one pass over the training edges, uniform negatives."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from unlearnrec.backbones.base import Batch
from unlearnrec.data.interactions import Interactions


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
    train: Interactions, batch_size: int, rng: np.random.Generator, device: torch.device | str = "cpu"
) -> Iterator[Batch]:
    """Shuffle all training edges once and yield (user, positive, negative) batches."""
    perm = rng.permutation(len(train))
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
