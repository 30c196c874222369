"""The validation rules of forgetting: the stopping rule of fine-tuning (:class:`ValidationStop`) and
``forget_guard`` (:func:`guard_scale`), which serves a state that keeps a share of the input model's
validation Recall. Both read the validation split and the embeddings, never the request being served.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from unlearnrec.backbones.base import Backbone
from unlearnrec.data.graph import Graph
from unlearnrec.data.interactions import Interactions
from unlearnrec.eval.ranking import evaluate_embeddings
from unlearnrec.unlearn.unlearnrec.pretrain import final_embeddings


@dataclass
class ValidationStop:
    """The stopping rule of fine-tuning: stop once Recall@K on the validation split reaches ``target``.

    ``val``: validation interactions (never training or request edges); ``exclude``: the training
    interactions masked when ranking (the residual training set of the model being tuned). The
    rule gets the model (a backbone, its graph, a layer-0 table) and nothing else: it cannot read
    the request being served. ``checks`` records (step, value) of every check.
    """

    val: Interactions
    exclude: list[Interactions]
    target: float
    k: int = 20
    checks: list[tuple[int, float]] = field(default_factory=list)

    def value(self, backbone: Backbone, graph: Graph, table: torch.Tensor) -> float:
        """Validation Recall@K of ``backbone`` on ``graph`` with layer-0 table ``table`` (eval mode)."""
        out = final_embeddings(backbone, graph, table)
        nu = graph.num_users
        return validation_recall(out[:nu], out[nu:], self.val, self.exclude, self.k)

    def reached(self, step: int, backbone: Backbone, graph: Graph, table: torch.Tensor) -> bool:
        """Check at ``step`` (recorded in ``checks``); True when the value is at least ``target``."""
        value = self.value(backbone, graph, table)
        self.checks.append((step, value))
        return value >= self.target


#: the scales of Ours(0)'s shift ``forget_guard`` tries, largest first (0: the residual graph alone)
GUARD_SCALES = (0.75, 0.5, 0.25, 0.0)


def guard_scale(
    backbone: Backbone,
    residual: Graph,
    e0: torch.Tensor,
    ours0: torch.Tensor,
    stop: ValidationStop,
    kept: tuple[int, float, torch.Tensor] | None = None,
    final_value: float | None = None,
) -> dict:
    """``forget_guard``: keep ``backbone.e0`` if its validation Recall reaches ``stop.target``, else
    serve ``kept`` (step, validation Recall, Ẽ⁰), an earlier fine-tuning state already known to reach it
    (``forget_guard_every``), else E⁰ + s (Ẽ⁰ - E⁰) for the first s of :data:`GUARD_SCALES` that
    reaches it (``ours0``: Ẽ⁰ of Ours(0), ``e0``: the input model's E⁰), else the evaluated state
    with the highest validation Recall. Reads the validation split (``stop``) and the embeddings
    only; ``final_value``: the validation Recall of ``backbone.e0`` when already known (the last
    fine-tuning check was at the last step), else it is evaluated. Returns the info fields:
    ``guard_scale`` (None: the state as it was kept, or ``kept``),
    ``guard_kept_step`` (the step of ``kept`` when it was served) and ``guard_checks`` [(scale,
    Recall), ...]."""

    final = backbone.e0.detach()  # read-only: only a winning scale or ``kept`` is copied in
    checks: list[tuple[float | None, float]] = [
        (None, stop.value(backbone, residual, final) if final_value is None else final_value)
    ]
    best: tuple[float, float | None, torch.Tensor] = (checks[0][1], None, final)
    if best[0] < stop.target and kept is not None:
        with torch.no_grad():
            backbone.e0.copy_(kept[2])
        return {
            "guard_scale": None,
            "guard_kept_step": kept[0],
            "guard_val_recall": kept[1],
            "guard_checks": checks,
        }
    if best[0] < stop.target:
        for s in GUARD_SCALES:
            table = e0 + s * (ours0 - e0)
            checks.append((s, stop.value(backbone, residual, table)))
            if checks[-1][1] > best[0]:
                best = (checks[-1][1], s, table)
            if checks[-1][1] >= stop.target:
                break
    if best[1] is not None:
        with torch.no_grad():
            backbone.e0.copy_(best[2])
    return {"guard_scale": best[1], "guard_val_recall": best[0], "guard_checks": checks}


def validation_recall(
    user_emb: torch.Tensor,
    item_emb: torch.Tensor,
    val: Interactions,
    exclude: list[Interactions],
    k: int = 20,
) -> float:
    """Recall@k on ``val`` (full ranking, ``exclude`` masked)."""
    return float(evaluate_embeddings(user_emb, item_emb, val, exclude=exclude, ks=(k,))[f"recall@{k}"])
