"""One training epoch against its floor, and side by side with PyTorch Geometric's LightGCN (issue 2).

(a) Floor: a LightGCN step must do 2L sparse products Â X (X: N x d) — L in the forward, L in the
backward (Â is symmetric, so the backward is the same product). The floor of an epoch is
``steps x 2L x`` the median time of one product (the library's ``propagate``; the time of a plain
``torch.sparse.mm`` is printed beside it), measured in this run on this graph, before, during (a
probe every ``--probe-every`` steps, its time taken out of the epoch's) and after the epoch: the load
of a shared machine drifts within a run. One epoch of the library's ``fit`` (sampling, forward,
backward, Adam: everything) is timed beside it and the ratio printed (target within 1.5x). A
per-part profile of the median step is printed too.

(c) Side by side: the same number of batches of the same size on the same training edges, ours
and PyG's ``LightGCN`` (dim, layers, batch, lr and reg the same), the latter in its own virtual
environment (``--pyg-python``) fed the default ``edge_index`` and a torch sparse CSR adjacency.
Both report median seconds per batch x batches per epoch; the ratio is printed.

    flock /tmp/unlearnrec-heavy.lock timeout 900 .venv/bin/python benchmarks/bench_epoch.py \\
        --dataset gowalla [--reference pyg]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from unlearnrec.backbones import build_backbone
from unlearnrec.data.datasets import load_dataset
from unlearnrec.data.graph import Graph, propagate
from unlearnrec.data.sampling import bpr_batches
from unlearnrec.runtime import child_env, tune_allocator
from unlearnrec.train.loop import TrainConfig, adam, fit

HERE = Path(__file__).resolve().parent
DEFAULT_PYG = "/work/runs/pyg-venv/bin/python"


def _median(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def spmm_samples(adj: torch.Tensor, dim: int, repeats: int, fn=propagate) -> list[float]:
    """Seconds of ``repeats`` products Â X (X: N x dim) by ``fn`` (the library's product by default)."""
    x = torch.randn(adj.shape[0], dim)
    times = []
    with torch.no_grad():
        fn(adj, x)
        for _ in range(repeats):
            t = time.perf_counter()
            fn(adj, x)
            times.append(time.perf_counter() - t)
    return times


def spmm_seconds(adj: torch.Tensor, dim: int, repeats: int, fn=propagate) -> float:
    """Median seconds of one product Â X (X: N x dim) by ``fn`` (the library's product by default)."""
    return statistics.median(spmm_samples(adj, dim, repeats, fn))


def step_profile(model, graph, batch_size: int, lr: float, batches: int, warmup: int = 2) -> dict[str, float]:
    """Median seconds per step of sampling, forward (loss), backward and Adam, over ``batches`` steps, and
    of the step's 2L sparse products timed after each step (``products``)."""
    opt = adam(model.parameters(), lr)  # fit's optimiser
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    it = bpr_batches(graph.interactions, batch_size, rng)
    batch_list = [next(it)]  # the first batch draws the negatives of the whole epoch
    steps = -(-len(graph.interactions) // batch_size)
    sample = (time.perf_counter() - t) / steps  # amortised over the epoch's steps
    batch_list += [next(it) for _ in range(warmup + batches - 1)]
    parts: dict[str, list[float]] = {"forward": [], "backward": [], "adam": [], "step": [], "products": []}
    x = torch.randn(graph.num_nodes, model.dim)
    for k, b in enumerate(batch_list):
        t0 = time.perf_counter()
        loss = model.loss(graph, b)["total"]
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        t3 = time.perf_counter()
        with torch.no_grad():  # the step's 2L products, timed right after it (interleaved: same load)
            for _ in range(2 * model.layers):
                propagate(graph.adj, x)
        t4 = time.perf_counter()
        if k >= warmup:
            for name, v in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t3 - t0, t4 - t3), strict=True):
                parts[name].append(v)
    out = {k: statistics.median(v) for k, v in parts.items()}
    out["sampling (per step, amortised)"] = sample
    return out


def pyg_epoch(pyg_python: str, data, mode: str, batch: int, batches: int, lr: float, threads) -> dict | None:
    if not Path(pyg_python).exists():
        print(f"PyG reference: {pyg_python} not found (see benchmarks/README.md)")
        return None
    with tempfile.TemporaryDirectory() as d:
        npz = Path(d) / "data.npz"
        np.savez(
            npz,
            num_users=data.num_users,
            num_items=data.num_items,
            train_u=data.train.users,
            train_i=data.train.items,
            val_u=data.val.users,
            val_i=data.val.items,
            test_u=data.test.users,
            test_i=data.test.items,
        )
        cmd = [
            pyg_python,
            str(HERE / "pyg_reference.py"),
            "epoch",
            "--data",
            str(npz),
            "--mode",
            mode,
            "--batch-size",
            str(batch),
            "--batches",
            str(batches),
            "--lr",
            str(lr),
        ]
        if threads:
            cmd += ["--threads", str(threads)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False, env=child_env())
    rows = [json.loads(x) for x in out.stdout.splitlines() if x.startswith("{")]
    res = next((r for r in rows if r.get("kind") == "result"), None)
    if res is None:
        print(f"PyG reference ({mode}) failed: {out.stderr.strip().splitlines()[-1:]}")
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="gowalla")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=4096, help="batch of the full epoch of (a)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--repeats", type=int, default=10, help="repeats of the sparse product")
    p.add_argument("--epochs", type=int, default=1, help="full epochs timed for (a) (median)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--probe-every", type=int, default=5, help="time one product every N steps of the epoch")
    p.add_argument("--reference", choices=["none", "pyg"], default="none")
    p.add_argument("--reference-batch", type=int, default=2048)
    p.add_argument("--reference-batches", type=int, default=10)
    p.add_argument("--reference-modes", default="edge_index,csr")
    p.add_argument("--pyg-python", default=DEFAULT_PYG)
    a = p.parse_args(argv)
    print(f"allocator: {tune_allocator()}")
    if a.threads:
        torch.set_num_threads(a.threads)
    data = load_dataset(a.dataset, a.data_dir)
    graph = Graph.from_interactions(data.train)

    def new_model():
        return build_backbone(
            "lightgcn",
            data.num_users,
            data.num_items,
            {"dim": a.dim, "layers": a.layers},
            generator=torch.Generator().manual_seed(0),
        )

    print(
        f"{a.dataset}: {graph.num_nodes} nodes, {len(data.train)} training edges, nnz(Â) "
        f"{graph.adj._nnz()}; dim {a.dim}, {a.layers} layers; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        flush=True,
    )

    # (a) one epoch against the floor of its sparse products. On a shared machine the load drifts within
    # a run, so the product is also timed *during* the epoch: every --probe-every steps, fit's loss function
    # times one product first (that time is taken out of the epoch's). The floor takes the median of the
    # products timed before, during and after the epoch.
    before = spmm_samples(graph.adj, a.dim, a.repeats)
    generic = spmm_seconds(graph.adj, a.dim, a.repeats, torch.sparse.mm)
    steps = -(-len(data.train) // a.batch_size)
    model = new_model()
    cfg = TrainConfig(epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, eval_every=1, patience=0)
    probe_x = torch.randn(graph.num_nodes, a.dim)
    during: list[float] = []
    calls = [0]

    def loss_fn(batch, gen):
        calls[0] += 1
        if a.probe_every and calls[0] % a.probe_every == 0:
            with torch.no_grad():
                t = time.perf_counter()
                propagate(graph.adj, probe_x)
                during.append(time.perf_counter() - t)
        return model.loss(graph, batch, generator=gen)

    res = fit(model, graph, cfg, loss_fn=loss_fn)
    epoch = statistics.median(r["epoch_seconds"] for r in res.history) - sum(during) / max(res.epochs_run, 1)
    after = spmm_samples(graph.adj, a.dim, a.repeats)
    spmm = statistics.median(before + during + after)
    floor = steps * 2 * a.layers * spmm
    print(
        f"(a) sparse product Â X: median {spmm * 1e3:.1f} ms (before the epoch "
        f"{statistics.median(before) * 1e3:.1f}, during "
        f"{statistics.median(during or [float('nan')]) * 1e3:.1f} ({len(during)} probes), after "
        f"{statistics.median(after) * 1e3:.1f}; "
        f"torch.sparse.mm: {generic * 1e3:.1f} ms); "
        f"epoch floor = {steps} steps x "
        f"{2 * a.layers} products = {floor:.2f} s",
        flush=True,
    )
    each = ", ".join(f"{r['epoch_seconds']:.2f}" for r in res.history)
    print(
        f"(a) one epoch of fit (batch {a.batch_size}): {epoch:.2f} s (epochs: {each}); "
        f"ratio to floor {epoch / floor:.2f}x (target <= 1.5x)",
        flush=True,
    )
    prof = step_profile(new_model(), graph, a.batch_size, a.lr, batches=8)
    print(
        "(a) median step: "
        + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in prof.items())
        + f" (step / its products timed after each step {prof['step'] / prof['products']:.2f}x)",
        flush=True,
    )

    # (c) side by side with PyG, the same batches
    if a.reference == "pyg":
        bs = a.reference_batch
        per_epoch = -(-len(data.train) // bs)
        ours = step_profile(new_model(), graph, bs, a.lr, batches=a.reference_batches)
        ours_batch = ours["step"] + ours["sampling (per step, amortised)"]
        print(
            f"(c) ours, batch {bs}: {ours_batch:.3f} s a batch -> {ours_batch * per_epoch:.1f} s an epoch "
            f"({per_epoch} batches)",
            flush=True,
        )
        for mode in a.reference_modes.split(","):
            r = pyg_epoch(a.pyg_python, data, mode, bs, a.reference_batches, a.lr, a.threads)
            if r is None:
                continue
            print(
                f"(c) PyG LightGCN ({mode}), batch {bs}: {r['batch_s']:.3f} s a batch -> "
                f"{r['epoch_s_estimate']:.1f} s an epoch; ours is {r['batch_s'] / ours_batch:.1f}x faster",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
