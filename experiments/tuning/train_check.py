"""Can the guard work without a validation split? A check on held-in training edges, measured (issue 25).

``forget_guard`` compares candidate states (Ours(0)'s shift scaled by 1, 0.75, 0.5, 0.25, 0) by their
Recall@20 on the model's validation split; a model trained on its whole training split (as the Gowalla
and Yelp2018 Table 2 grids) has none, and the guard is off. The obvious substitute is a check set carved
from the residual training edges themselves. This script measures, on finished grids from the cache
(nothing is trained), whether such a check orders the candidates as the test split does: for each
candidate, test Recall@20 (as a share of the grid's Retrain), validation Recall where the grid has a
split, and two checks on a seeded 2% of the residual training edges (at most 20,000), ranked with every
other training edge masked: ``check`` on the residual graph as served, ``check_out`` with the check
edges also removed from the graph; MI-NG and AUC of the request's edges. The test column is for
reading the result only; nothing here selects anything.

    python experiments/tuning/train_check.py experiments/kinds/lightgcn-authors.toml \\
        experiments/gowalla-table2-cpu-authors.toml experiments/yelp2018-table2-lightgcn-authors.toml \\
        --json experiments/results/train-check.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

from unlearnrec.data.interactions import Interactions
from unlearnrec.eval.membership import edge_scores, membership_auc, mi_ng, sample_non_edges
from unlearnrec.experiments.grid import groups, load_config
from unlearnrec.experiments.runner import default_cache
from unlearnrec.experiments.store import Store
from unlearnrec.unlearn.unlearnrec import UnlearnRec
from unlearnrec.unlearn.unlearnrec.guard import GUARD_SCALES, validation_recall
from unlearnrec.unlearn.unlearnrec.pretrain import final_embeddings


def check_split(train: Interactions, seed: int = 123, share: float = 0.02, cap: int = 20_000):
    """(check, rest): a seeded ``share`` of ``train`` (at most ``cap`` edges) and the other edges."""
    rng = np.random.default_rng(seed)
    n = min(cap, max(1, int(len(train) * share)))
    mask = np.zeros(len(train), bool)
    mask[rng.choice(len(train), size=n, replace=False)] = True
    return train.subset(mask), train.subset(~mask)


def measure(grid: str, label: str, cache: str | None, data_dir: str | None) -> list[dict]:
    cfg = load_config(grid)
    store = Store(cfg, cache or default_cache(), data_dir=data_dir)
    g = groups(cfg)[0]
    spec = next((m for m in cfg.methods if m.title == label), None)
    retrain = next((m for m in cfg.methods if m.name == "retrain"), None)
    if spec is None or retrain is None:
        raise SystemExit(f"error: {grid} needs a Retrain row and a row labelled {label!r}")
    model, att, data = store.model(g), store.forget_set(g), store.dataset(g.dataset)
    ref = store.retrained(g, retrain)
    if ref is None:
        raise SystemExit(f"error: the cache has no retrained model of {grid}: run it first")
    forget_fields = {k: v for k, v in spec.config.items() if k == "forget_rule"}
    res = UnlearnRec.from_encoder(store.prepared_dir(g, spec), model, **forget_fields).forget(
        model, att.train, store.request(g)
    )
    e0 = model.backbone.e0.detach()
    shift = res.model.backbone.e0.detach() - e0
    residual, nu = res.model.graph, model.graph.num_users
    check, rest = check_split(residual.interactions)
    has_val = data.val is not None and len(data.val) > 0
    known = att.train.union(data.test).union(data.val) if has_val else att.train.union(data.test)
    neg_u, neg_i = sample_non_edges(known, att.edges.users, g.seed)
    # masked when ranking the test split: the residual training edges (as the grid's cells) and validation
    test_mask = [residual.interactions, data.val] if has_val else [residual.interactions]

    def row(name: str, graph, table: torch.Tensor, backbone=model.backbone) -> dict:
        out = final_embeddings(backbone, graph, table)
        u, i = out[:nu], out[nu:]
        r = {"grid": cfg.name, "label": label, "candidate": name}
        r["test_recall"] = validation_recall(u, i, data.test, test_mask)
        if has_val:
            r["val_recall"] = validation_recall(u, i, data.val, [att.train])
        r["check"] = validation_recall(u, i, check, [rest, att.edges])
        held = final_embeddings(backbone, graph.residual(check), table)
        r["check_out"] = validation_recall(held[:nu], held[nu:], check, [rest, att.edges])
        f = edge_scores(u, i, att.edges.users, att.edges.items)
        n = edge_scores(u, i, neg_u, neg_i)
        r["mi_ng"], r["auc"] = mi_ng(n, f), membership_auc(f, n)
        return r

    rows = [row("input model (attacked graph)", model.graph, e0)]
    rows += [row(f"shift x {s:g}", residual, e0 + s * shift) for s in (1.0, *GUARD_SCALES)]
    out = final_embeddings(ref.backbone, ref.graph)
    base = validation_recall(out[:nu], out[nu:], data.test, test_mask)
    for r in rows:
        r["test_share"] = r["test_recall"] / base
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("grids", nargs="+")
    p.add_argument(
        "--label", default="UnlearnRec(0) hubs", help="the UnlearnRec row whose encoder and rule are used"
    )
    p.add_argument("--cache", default=None)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--json", default=None, help="also write the rows here (JSON lines)")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    rows = [r for g in a.grids for r in measure(g, a.label, a.cache, a.data_dir)]
    print("| grid | candidate | test share of Retrain | val Recall | check | check_out | MI-NG | AUC |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        val = f"{r['val_recall']:.4f}" if "val_recall" in r else "-"
        print(
            f"| {r['grid']} | {r['candidate']} | {r['test_share'] * 100:.1f}% | {val} | {r['check']:.4f} | "
            f"{r['check_out']:.4f} | {r['mi_ng']:.2f} | {r['auc']:.3f} |"
        )
    if a.json:
        with open(a.json, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
