"""How strongly the self-supervised term pulls at the start: ‖∂L_ssl/∂E⁰‖ / ‖∂L_bpr/∂E⁰‖ at initialisation.

    .venv/bin/python benchmarks/ssl_balance.py --dataset ml-1m
    .venv/bin/python benchmarks/ssl_balance.py --dataset yelp2018 --batch-size 8192 --batches 3

InfoNCE compares cosine similarities, so its gradient with respect to an embedding z scales like 1/‖z‖,
while BPR's (a dot product) scales like ‖z‖: the ratio of the two moves with the square of the
initial embedding scale. LightGCN-PyTorch initialises E⁰ with a normal of std 0.1; SELFRec and SSLRec
(the UnlearnRec authors' code) use Xavier-uniform per table, std sqrt(2 / (rows + d)), which is 0.02 on
ML-1M and 0.008 on Yelp2018 at d = 64. The same λ therefore weighs 25-150x more in their code than in a
std-0.1 model. This prints the ratio for SGL and SimGCL at the settings we ship, both initialisations,
as the median over ``--batches`` BPR batches (one seeded augmentation each), and for SimGCL how large its
noise (of absolute norm ε) is against the typical row of ÂE⁰, the first layer it perturbs. It needs no
training: seconds on ML-1M.
"""

from __future__ import annotations

import argparse
import statistics
from itertools import islice

import numpy as np
import torch

from unlearnrec.backbones import build_backbone
from unlearnrec.data.datasets import load_dataset
from unlearnrec.data.graph import Graph, propagate
from unlearnrec.data.sampling import bpr_batches

# (label, backbone, SSL settings): UnlearnRec's (docs/method.md §8) and the SGL / SimGCL papers'
SGL_UR = {"keep": 0.8, "ssl_weight": 0.01, "temperature": 0.1}
SGL_PAPER = {"keep": 0.9, "ssl_weight": 0.1, "temperature": 0.2}
SIMGCL_UR = {"eps": 0.2, "ssl_weight": 0.01, "temperature": 0.1}
SIMGCL_PAPER = {"eps": 0.1, "ssl_weight": 0.5, "temperature": 0.2}
SETTINGS = [
    ("SGL, UnlearnRec (λ 0.01, τ 0.1, keep 0.8)", "sgl", SGL_UR),
    ("SGL, SGL paper (λ 0.1, τ 0.2, keep 0.9)", "sgl", SGL_PAPER),
    ("SimGCL, UnlearnRec (λ 0.01, τ 0.1, ε 0.2)", "simgcl", SIMGCL_UR),
    ("SimGCL, SimGCL paper (λ 0.5, τ 0.2, ε 0.1)", "simgcl", SIMGCL_PAPER),
]


def noise_share(net, graph: Graph) -> str:
    """SimGCL: ε over the median row norm of ÂE⁰ (how much of a view's layer 1 is noise); "–" for SGL."""
    eps = getattr(net.config, "eps", None)
    if eps is None:
        return "–"
    with torch.no_grad():
        rows = torch.linalg.vector_norm(propagate(graph.adj, net.e0), dim=1)
    return f"{eps / float(rows.median()):.1f}"


def ratio(net, graph: Graph, batch, seed: int) -> float:
    terms = net.loss(graph, batch, generator=torch.Generator().manual_seed(seed))
    (g_bpr,) = torch.autograd.grad(terms["bpr"], net.e0, retain_graph=True)
    (g_ssl,) = torch.autograd.grad(terms["ssl"], net.e0)
    return float(g_ssl.norm() / g_bpr.norm())


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="ml-1m")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--batches", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    ds = load_dataset(args.dataset, args.data_dir, val_ratio=0.1, seed=0)
    graph = Graph.from_interactions(ds.train)
    batches = list(islice(bpr_batches(ds.train, args.batch_size, np.random.default_rng(0)), args.batches))
    print(f"{args.dataset}: dim {args.dim}, batch {args.batch_size}, median of {len(batches)} batches")
    print("| backbone, SSL settings | init | E⁰ std | ‖∂ssl‖ / ‖∂bpr‖ | ε / ‖ÂE⁰ row‖ |")
    print("|---|---|---:|---:|---:|")
    for label, name, ssl in SETTINGS:
        for init in ("normal", "xavier"):
            cfg = {"dim": args.dim, "init": init, **ssl}
            net = build_backbone(
                name, ds.num_users, ds.num_items, cfg, generator=torch.Generator().manual_seed(0)
            )
            r = statistics.median(ratio(net, graph, b, seed) for seed, b in enumerate(batches))
            std = float(net.e0.detach().std())
            shown = "normal, std 0.1" if init == "normal" else "xavier"
            print(f"| {label} | {shown} | {std:.3f} | {r:.1f} | {noise_share(net, graph)} |")


if __name__ == "__main__":
    main()
