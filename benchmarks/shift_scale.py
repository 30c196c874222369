"""How large Ours(0)'s shift ΔE⁰ = Ẽ⁰ - E⁰ is against the rows it moves, per finished grid (issue 21).

The Influence Encoder writes a request's influence into the layer-0 rows of the request's nodes.
Its H⁰ and η are trained by Adam at a fixed lr, whatever the scale of the model's rows; a
model whose embeddings are small (Xavier-scale init and a BPR term still near log 2, as SimGCL on
Yelp2018 at lr 1e-3) can get a shift of about the size one with large rows gets. This script
takes finished grids from the cache (nothing is trained: the model, attack and the method's
encoder must be there), forgets the grid's request once with one UnlearnRec row and prints, over
the request's nodes, the median ‖E⁰ row‖, the median ‖ΔE⁰ row‖ and the median of their ratio,
with the scale of the model's scores (mean |ŷ| over a sample of training edges) that the
σ-based MI metrics read.

It also prints where Ours(0) goes against what dropping the edges does (issue 25, "L_p's target"):
with Ē the attacked input's final embeddings, Ē_r its E⁰ propagated on the residual graph and Ē_0
Ours(0)'s (every row), the sizes ‖Ē_r - Ē‖ and ‖Ē_0 - Ē‖, and Ē_0 - Ē split along Ē_r - Ē
(``along``: 1 moves exactly as the residual graph does, 0 stays at the input, < 0 moves back past
it) and across it (``across``: the orthogonal part's size over ‖Ē_r - Ē‖).
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

from unlearnrec.eval.membership import edge_scores
from unlearnrec.experiments.grid import groups, load_config
from unlearnrec.experiments.runner import default_cache
from unlearnrec.experiments.store import Store
from unlearnrec.unlearn.unlearnrec import UnlearnRec
from unlearnrec.unlearn.unlearnrec.pretrain import final_embeddings


def measure(grid: str, label: str, cache: str | None, data_dir: str | None) -> dict:
    """The shift's size on the first group of ``grid`` under its method labelled ``label``."""
    cfg = load_config(grid)
    store = Store(cfg, cache or default_cache(), data_dir=data_dir)
    group = groups(cfg)[0]
    spec = next((m for m in cfg.methods if m.title == label), None)
    if spec is None:
        raise SystemExit(f"error: {grid} has no method labelled {label!r}")
    folder = store.prepared_dir(group, spec)
    if not store.has_model(group) or not (folder / "meta.json").is_file():
        raise SystemExit(f"error: {store.root} has no model or encoder of {group.tag} {label!r}: run {grid}")
    model, att = store.model(group), store.forget_set(group)
    res = UnlearnRec.from_encoder(folder, model).forget(model, att.train, store.request(group))
    e0 = model.backbone.e0.detach()
    shift = (res.model.backbone.e0.detach() - e0).norm(dim=1)
    nodes = torch.unique(
        torch.cat(
            [torch.as_tensor(att.edges.users), torch.as_tensor(att.edges.items) + model.graph.num_users]
        )
    )
    rows = e0.norm(dim=1)
    u, i = model.embeddings()
    sample = np.arange(0, len(att.train), max(1, len(att.train) // 100_000))
    scores = edge_scores(u, i, att.train.users[sample], att.train.items[sample])
    e_bar = torch.cat([u, i])  # the input's final embeddings (model.embeddings() propagated them)
    e_res = final_embeddings(model.backbone, res.model.graph)
    e_ours = final_embeddings(res.model.backbone, res.model.graph)
    d_res, d_ours = (e_res - e_bar).flatten(), (e_ours - e_bar).flatten()
    moved = float(d_res.norm())
    along = float(d_ours @ d_res) / max(moved**2, 1e-24)
    return {
        "grid": cfg.name,
        "backbone": group.backbone,
        "label": label,
        "request_nodes": int(len(nodes)),
        "median_row_norm": float(rows[nodes].median()),
        "median_shift_norm": float(shift[nodes].median()),
        "median_shift_over_row": float((shift[nodes] / rows[nodes].clamp_min(1e-12)).median()),
        "mean_abs_train_score": float(scores.abs().mean()),
        "residual_move": moved,
        "ours0_move": float((e_ours - e_bar).norm()),
        "along": along,
        "across": float((d_ours - along * d_res).norm()) / max(moved, 1e-12),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("grids", nargs="+")
    p.add_argument(
        "--label", default="UnlearnRec(0) tuned, λp/8", help="the UnlearnRec row whose encoder is used"
    )
    p.add_argument("--cache", default=None)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--json", default=None, help="also write the rows here")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    rows = [measure(g, a.label, a.cache, a.data_dir) for g in a.grids]
    head = "| grid | backbone | request nodes | median ‖E⁰ row‖ | median ‖ΔE⁰ row‖ | median ratio |"
    print(head + " mean abs ŷ | ‖Ē_r - Ē‖ | ‖Ē_0 - Ē‖ | along | across |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['grid']} | {r['backbone']} | {r['request_nodes']:,} | {r['median_row_norm']:.3f} | "
            f"{r['median_shift_norm']:.3f} | {r['median_shift_over_row']:.2f} | "
            f"{r['mean_abs_train_score']:.4f} | {r['residual_move']:.3f} | {r['ours0_move']:.3f} | "
            f"{r['along']:.2f} | {r['across']:.2f} |"
        )
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
