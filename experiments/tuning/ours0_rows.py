"""Where does UnlearnRec(0) lose Recall? Split its change of the layer-0 table by the rows it touches.

Ours(0) writes Ẽ⁰ = E⁰ + MLP(ΔE⁰) (docs/method.md Eq. 15-18) into three kinds of rows: every node gets
H⁰ (the readout includes layer 0), and the request's users and items get, in addition, the terms
propagated over the IDM (H¹..H^L and the η term). This script serves one request of a cached grid
cell with a pre-trained encoder, applying ΔE⁰ to one kind of rows at a time, and prints for each
variant the *validation* Recall@20 (never the test split: this is for choosing, not reporting) and
MI-BF / MI-NG / AUC on the request, as the runner computes them.

Run it on a grid whose cells are cached (models, attack and the encoder in the runner's cache,
``$UNLEARNREC_CACHE`` or ``~/.cache/unlearnrec``; ``--cache`` names another), e.g. the ml-100k
development grid:

    unlearnrec experiment experiments/tuning/ie-ml-100k.toml --out runs/tune-ie-ml-100k
    python experiments/tuning/ours0_rows.py experiments/tuning/ie-ml-100k.toml runs/tune-ie-ml-100k lr5e-3
    python experiments/tuning/ours0_rows.py ... lr5e-3 --random 0.01   # a random 1% request instead

``--random R`` serves a uniform random request of R of the model's training edges (seeded) instead
of the grid's own request.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from unlearnrec.data.graph import propagate
from unlearnrec.data.requests import sample_edges
from unlearnrec.eval.membership import forgetting_metrics
from unlearnrec.experiments.grid import groups, load_config
from unlearnrec.experiments.runner import default_cache
from unlearnrec.experiments.store import Store
from unlearnrec.unlearn.unlearnrec import UnlearnRec, local_idm
from unlearnrec.unlearn.unlearnrec.pretrain import copy_backbone


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config", help="the grid's experiment TOML")
    p.add_argument("out", help="the grid's --out folder (its cache: --cache)")
    p.add_argument("label", help="the label of the UnlearnRec method whose encoder to use")
    p.add_argument("--random", type=float, default=None, help="serve a random request of this ratio")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--cache", default=None, help="the runner's cache (default: the runner's)")
    args = p.parse_args()
    cfg = load_config(args.config)
    store = Store(cfg, args.cache or default_cache(), data_dir=args.data_dir)
    group = groups(cfg)[0]
    spec = next(m for m in cfg.methods if m.title == args.label)
    att = store.forget_set(group)
    model = store.model(group)
    data = store.dataset(group.dataset)
    method = UnlearnRec.from_encoder(store.prepared_dir(group, spec), model)
    enc = method.encoder
    edges = store.request(group).edges
    if args.random is not None:
        edges = sample_edges(att.train, args.random, np.random.default_rng(1))
    nodes, sub = local_idm(edges)
    residual = model.graph.residual(edges)
    e_bar = method.final_embeddings(model)
    e0 = model.backbone.e0.detach()
    is_user = nodes < model.train.num_users
    users = nodes[is_user]
    known = att.train.union(data.val).union(data.test)
    before = model.embeddings()

    with torch.no_grad():
        full = enc.serve(nodes, sub, e0, e_bar)
        local = enc.delta_local(nodes, sub, e_bar)
        layers = [enc.h0[nodes]]
        for _ in range(enc.layers):
            layers.append(propagate(sub, layers[-1]))
        w = enc.eta[nodes] * e_bar[nodes]
        for _ in range(enc.layers):
            w = propagate(sub, w)
        variants: dict[str, torch.Tensor] = {
            "no change (residual graph only)": e0.clone(),
            "Ours(0)": full,
            "H0 on every row, nothing propagated": enc.base(e0),
        }

        def rows(which: torch.Tensor, delta: torch.Tensor, start: torch.Tensor | None = None) -> torch.Tensor:
            out = (e0 if start is None else start).clone()
            out[nodes[which]] = e0[nodes[which]] + enc.mlp(delta[which])
            return out

        everything = torch.ones_like(is_user)
        variants["request rows only"] = rows(everything, local)
        variants["request users only"] = rows(is_user, local)
        variants["request items only"] = rows(~is_user, local)
        # Ours(0) with the request users' rows replaced by one part of their ΔE⁰
        hbar = enc.h_readout(layers)
        for name, part in {
            "H0": layers[0],
            "H-bar (H0..HL)": hbar,
            "H1..HL": hbar - layers[0],
            "-alpha W^L (eta term)": -enc.alpha * w,
        }.items():
            variants[f"Ours(0), users get {name} only"] = rows(is_user, part, start=full)

    def norm(x: torch.Tensor) -> float:
        return float(x.norm(dim=1).mean())

    print(
        f"{group.dataset} {group.backbone}: request {len(edges):,} edges, {len(users):,} users, "
        f"{int((~is_user).sum()):,} items; mean row norms, users: E0 {norm(e0[users]):.2f}, "
        f"delta {norm(local[is_user]):.2f}; items: E0 {norm(e0[nodes[~is_user]]):.2f}, "
        f"delta {norm(local[~is_user]):.2f}"
    )
    print("| variant | val Recall@20 | of no change | MI-BF | MI-NG | AUC |")
    print("|---|---:|---:|---:|---:|---:|")
    ref = None
    for name, e in variants.items():
        m = method._new_model(model, copy_backbone(model.backbone, e), residual)
        val = m.evaluate(data, "val")["recall@20"]
        ref = val if ref is None else ref
        fm = forgetting_metrics(before, m.embeddings(), edges, known, seed=0)
        mi = f"{fm['mi_bf']:.2f} | {fm['mi_ng']:.2f} | {fm['auc']:.3f}"
        print(f"| {name} | {val:.4f} | {val / ref:.1%} | {mi} |")


if __name__ == "__main__":
    main()
