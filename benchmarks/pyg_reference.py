"""PyTorch Geometric's ``LightGCN`` as the reference implementation (run with the PyG venv's python).

This file imports only torch, numpy and torch_geometric, never ``unlearnrec``: it runs in a separate
virtual environment (see benchmarks/README.md) as a subprocess of ``bench_epoch.py`` and
``time_to_accuracy.py``, which hand it the very same train/val/test edges in an ``.npz`` file.

It follows PyG's own example (examples/lightgcn.py): ``LightGCN(num_nodes, dim, num_layers)``,
a batch of training edges with uniform random negatives, ``model(adj, edge_label_index)`` and
``model.recommendation_loss(pos, neg, node_id=edge_label_index.unique(), lambda_reg=1e-4)``, Adam.
The graph is fed either as the default ``edge_index`` (message passing by gather/scatter) or as a
torch sparse CSR adjacency (``--mode csr``, sparse-matrix products; no torch-sparse extension).

Subcommands (each prints JSON lines on stdout):
- ``epoch``: time ``--batches`` training batches (after ``--warmup``); prints the median seconds per
  batch and the epoch time it implies (batches per epoch x median).
- ``train``: train for at most ``--minutes`` of wall time, evaluating full-ranking test Recall@20 /
  NDCG@20 (train and val items masked) every ``--eval-every-s`` seconds; evaluation time is excluded
  from the wall clock.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings

import numpy as np
import torch
from torch_geometric.nn.models import LightGCN

warnings.filterwarnings("ignore", message="Sparse (CSR tensor support|invariant checks)")


def load(path: str):
    z = np.load(path)
    nu, ni = int(z["num_users"]), int(z["num_items"])
    arrays = {
        k: torch.from_numpy(z[k].astype(np.int64)) for k in z.files if k not in ("num_users", "num_items")
    }
    return nu, ni, arrays


def graph(nu: int, ni: int, tu: torch.Tensor, ti: torch.Tensor, mode: str):
    """Undirected bipartite graph over nu + ni nodes, as edge_index (2, 2E) or sparse CSR (N x N)."""
    n = nu + ni
    src = torch.cat([tu, ti + nu])
    dst = torch.cat([ti + nu, tu])
    edge_index = torch.stack([src, dst])
    if mode == "edge_index":
        return edge_index
    coo = torch.sparse_coo_tensor(edge_index, torch.ones(src.numel()), (n, n)).coalesce()
    return coo.to_sparse_csr()


def sample_batches(nu: int, ni: int, tu: torch.Tensor, ti: torch.Tensor, batch: int, gen: torch.Generator):
    """PyG's example: shuffled training edges, one uniform random negative item each."""
    perm = torch.randperm(tu.numel(), generator=gen)
    for s in range(0, perm.numel(), batch):
        idx = perm[s : s + batch]
        u, i = tu[idx], ti[idx] + nu
        j = torch.randint(0, ni, (idx.numel(),), generator=gen) + nu
        yield torch.stack([torch.cat([u, u]), torch.cat([i, j])])


def step(model, opt, adj, edge_label_index, reg: float) -> float:
    opt.zero_grad()
    pos, neg = model(adj, edge_label_index).chunk(2)
    loss = model.recommendation_loss(pos, neg, node_id=edge_label_index.unique(), lambda_reg=reg)
    loss.backward()
    opt.step()
    return float(loss.detach())


@torch.no_grad()
def evaluate(model, adj, nu: int, ni: int, d: dict, k: int = 20, batch: int = 2048) -> tuple[float, float]:
    emb = model.get_embedding(adj)
    ue, ie = emb[:nu], emb[nu:]
    # user-sorted edge lists for masking (train + val) and targets (test)
    ex_u = torch.cat([d["train_u"], d["val_u"]])
    ex_i = torch.cat([d["train_i"], d["val_i"]])
    o = torch.argsort(ex_u, stable=True)
    ex_u, ex_i = ex_u[o], ex_i[o]
    o = torch.argsort(d["test_u"], stable=True)
    te_u, te_i = d["test_u"][o], d["test_i"][o]
    nrel = torch.bincount(te_u, minlength=nu)
    users = torch.nonzero(nrel > 0).flatten()
    disc = 1.0 / torch.log2(torch.arange(2, k + 2, dtype=torch.float32))
    idcg_cum = torch.cumsum(disc, 0)
    rec = ndcg = 0.0
    for s in range(0, users.numel(), batch):
        us = users[s : s + batch]
        lo, hi = int(us[0]), int(us[-1]) + 1
        scores = ue[us] @ ie.T
        pos_of = torch.full((hi - lo,), -1, dtype=torch.long)
        pos_of[us - lo] = torch.arange(us.numel())
        a, b = torch.searchsorted(ex_u, lo), torch.searchsorted(ex_u, hi)
        rows = pos_of[ex_u[a:b] - lo]
        keep = rows >= 0
        scores[rows[keep], ex_i[a:b][keep]] = float("-inf")
        top = torch.topk(scores, k, dim=1).indices
        rel = torch.zeros(us.numel(), ni, dtype=torch.bool)
        a, b = torch.searchsorted(te_u, lo), torch.searchsorted(te_u, hi)
        rows = pos_of[te_u[a:b] - lo]
        keep = rows >= 0
        rel[rows[keep], te_i[a:b][keep]] = True
        hits = torch.gather(rel, 1, top).float()
        n = nrel[us]
        rec += float((hits.sum(1) / n).sum())
        ndcg += float(((hits * disc).sum(1) / idcg_cum[torch.clamp(n, max=k) - 1]).sum())
    return rec / users.numel(), ndcg / users.numel()


def main() -> None:
    p = argparse.ArgumentParser(description="PyG LightGCN reference")
    p.add_argument("what", choices=["epoch", "train"])
    p.add_argument("--data", required=True)
    p.add_argument("--mode", choices=["edge_index", "csr"], default="edge_index")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=2048)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--reg", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--batches", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--eval-every-s", type=float, default=60.0)
    p.add_argument("--target", type=float, default=None)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    nu, ni, d = load(a.data)
    adj = graph(nu, ni, d["train_u"], d["train_i"], a.mode)
    model = LightGCN(nu + ni, a.dim, a.layers)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    gen = torch.Generator().manual_seed(a.seed)
    n_train = d["train_u"].numel()
    per_epoch = -(-n_train // a.batch_size)
    head = {
        "kind": "info",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "mode": a.mode,
        "batch_size": a.batch_size,
        "batches_per_epoch": per_epoch,
        "dim": a.dim,
        "layers": a.layers,
    }
    print(json.dumps(head), flush=True)
    if a.what == "epoch":
        times = []
        it = sample_batches(nu, ni, d["train_u"], d["train_i"], a.batch_size, gen)
        for b in range(a.warmup + a.batches):
            eli = next(it)
            t = time.perf_counter()
            step(model, opt, adj, eli, a.reg)
            if b >= a.warmup:
                times.append(time.perf_counter() - t)
        med = statistics.median(times)
        print(
            json.dumps(
                {"kind": "result", "batch_s": med, "batch_s_all": times, "epoch_s_estimate": med * per_epoch}
            ),
            flush=True,
        )
        return
    wall, epoch, last_eval, reached = 0.0, 0, 0.0, None
    limit = a.minutes * 60
    while wall < limit:
        epoch += 1
        for bi, eli in enumerate(sample_batches(nu, ni, d["train_u"], d["train_i"], a.batch_size, gen), 1):
            t = time.perf_counter()
            loss = step(model, opt, adj, eli, a.reg)
            wall += time.perf_counter() - t
            end_of_epoch = bi == per_epoch
            if wall - last_eval >= a.eval_every_s or end_of_epoch or wall >= limit:
                model.eval()
                r, n = evaluate(model, adj, nu, ni, d)
                model.train()
                last_eval = wall
                ep = round(epoch - 1 + bi / per_epoch, 3)
                row = {
                    "kind": "eval",
                    "wall_s": round(wall, 2),
                    "epoch": ep,
                    "loss": round(loss, 5),
                    "test_recall@20": round(r, 4),
                    "test_ndcg@20": round(n, 4),
                }
                print(json.dumps(row), flush=True)
                if reached is None and a.target is not None and r >= a.target:
                    reached = row
            if wall >= limit:
                break
    print(json.dumps({"kind": "result", "wall_s": wall, "epochs": epoch, "reached": reached}), flush=True)


if __name__ == "__main__":
    main()
