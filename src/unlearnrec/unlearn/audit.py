"""Requests and the edges a check must avoid, for every front end (command line, service).

:func:`request_of` builds the :class:`~unlearnrec.unlearn.base.Request` of an edges file, users or
items, validated against a training set; :func:`known_edges` is every edge ever seen, from which the
membership checks draw their non-edges.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from unlearnrec.data.interactions import Interactions
from unlearnrec.errors import RequestError, UnlearnRecError
from unlearnrec.model import TrainedModel
from unlearnrec.unlearn.base import Request


def request_of(
    train: Interactions,
    *,
    edges_file: str | os.PathLike | None = None,
    users: Sequence[int] | None = None,
    items: Sequence[int] | None = None,
) -> Request:
    """The request of exactly one of: an edges file (``user item`` lines), whole users, whole items."""
    from unlearnrec.data.requests import read_edges_file

    if edges_file:
        u, i = read_edges_file(edges_file)
        return Request.of_edges(train, u, i)
    if users:
        return Request.of_users(train, users)
    if items:
        return Request.of_items(train, items)
    raise RequestError("no request given: use --edges FILE, --user U ... or --item I ...")


def known_edges(
    model: TrainedModel, request: Request, data_dir: str | os.PathLike | None
) -> tuple[Interactions | None, str]:
    """Every edge ever seen (train ∪ val ∪ test ∪ request), as ``forget`` uses for MI-NG's non-edges.

    With the model's dataset at hand, verify draws the same non-edges as ``forget`` (same seed), so
    both report the same MI-NG; without it the non-edges avoid only the model's graph and the
    request, which can change a few draws (and MI-NG in its second or third decimal).
    """
    try:
        data = model.load_dataset(data_dir)
    except UnlearnRecError as e:
        return None, (
            f"drawn avoiding the model's graph and the request only ({e}); "
            "MI-NG can differ slightly from the one 'forget' printed"
        )
    known = data.train.union(data.val).union(data.test).union(request.edges)
    return (
        known,
        f"drawn avoiding every edge of {model.dataset} (as 'forget' does: same MI-NG for the same seed)",
    )
