"""Verification that a request was honoured: structural checks plus membership inference."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from unlearnrec.data.interactions import Interactions
from unlearnrec.eval.membership import forgetting_metrics
from unlearnrec.model import TrainedModel
from unlearnrec.unlearn.base import Request
from unlearnrec.unlearn.ledger import Ledger


@dataclass
class Verification:
    """Named checks, each ``{"name", "passed", "detail", ...}``; ``passed`` if all did."""

    checks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c["passed"] for c in self.checks if c["passed"] is not None)

    def add(self, name: str, passed: bool | None, detail: str, **values: Any) -> None:
        self.checks.append({"name": name, "passed": passed, "detail": detail, **values})


def verify_forgetting(
    model: TrainedModel,
    request: Request,
    original: TrainedModel | None = None,
    ledger: Ledger | None = None,
    min_mi_ng: float = 1.0,
    seed: int = 0,
    known: Interactions | None = None,
) -> Verification:
    """Check that ``model`` no longer reflects ``request``.

    1. *edges absent*: no requested edge is in the model's training graph;
    2. *nodes erased*: forgotten users/items are recorded and their layer-0 rows are zero;
    3. *membership*: on edges whose endpoints are not erased, MI-NG (mean σ of random never-seen
       non-edges / mean σ of the forgotten edges) is at least ``min_mi_ng``: an attacker cannot
       tell the forgotten interactions from things the user never did. With ``original``,
       MI-BF (before / after) is reported too. ``known`` (default: the model's graph plus the
       requested edges) is every edge ever seen, from which the non-edges are excluded; with the
       dataset's train ∪ val ∪ test ∪ request and the same ``seed``, MI-NG and MI-BF are computed
       exactly as ``forget`` computes them (:func:`~unlearnrec.eval.membership.forgetting_metrics`),
       so the two report the same numbers for an edge request;
    4. *ledger*: with ``ledger``, the request's fingerprint is recorded and the chain is intact.
    """
    v = Verification()
    edges = request.edges
    present = model.train.intersects(edges)
    v.add(
        "edges_absent", present == 0, f"{present} of {len(edges)} requested edges still in the training graph"
    )

    if len(request.users) or len(request.items):
        e0 = model.backbone.e0.detach()
        nu = model.train.num_users
        rows = np.concatenate([request.users, request.items + nu]).astype(np.int64)
        zero = bool((e0[torch.as_tensor(rows, device=e0.device)] == 0).all())
        recorded = set(request.users.tolist()) <= set(model.forgotten_users.tolist()) and set(
            request.items.tolist()
        ) <= set(model.forgotten_items.tolist())
        v.add(
            "nodes_erased",
            zero and recorded,
            f"{len(request.users)} users, {len(request.items)} items: rows zero={zero}, recorded={recorded}",
        )

    keep = ~np.isin(edges.users, request.users) & ~np.isin(edges.items, request.items)
    eu = edges.users[keep]
    if len(eu):
        scored = edges if keep.all() else edges.subset(keep)
        after = model.embeddings()
        before = original.embeddings() if original is not None else after
        if known is None:
            known = model.train.union(edges)
        fm = forgetting_metrics(before, after, scored, known, seed=seed)
        ng = fm["mi_ng"]
        values: dict[str, Any] = {"mi_ng": ng}
        detail = f"MI-NG {ng:.4f} (>= {min_mi_ng} required) over {len(eu)} edges"
        if not keep.all():
            detail += f" (the {int((~keep).sum())} edges touching erased nodes are left out)"
        if original is not None:
            values["mi_bf"] = fm["mi_bf"]
            detail += f"; MI-BF {fm['mi_bf']:.4f}"
        v.add("membership", ng >= min_mi_ng, detail, **values)
    else:
        v.add("membership", None, "not applicable: every requested edge touches an erased node")

    if ledger is not None:
        fp = edges.fingerprint()
        try:
            n = ledger.check()
            found = ledger.find(fp)
            v.add(
                "ledger", bool(found), f"{len(found)} of {n} entries record this request", entries=len(found)
            )
        except Exception as e:  # a broken chain is a failed check, not a crash
            v.add("ledger", False, str(e))
    return v
