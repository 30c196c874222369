"""Training-step time of SGL, SimGCL and BPR-MF as a ratio of LightGCN's, on one dataset.

    .venv/bin/python benchmarks/bench_backbones.py --dataset ml-1m --batches 30
    .venv/bin/python benchmarks/bench_backbones.py --dataset ml-1m --epoch     # + one full epoch each

Each backbone is built from ``configs/<backbone>-<dataset>.toml`` when it exists (else its defaults) and
runs ``--batches`` optimiser steps (forward, backward, Adam) on the same BPR batches; the first
``--warmup`` steps are not timed. SGL is timed twice: with its views drawn once per epoch (what ``fit``
does; the two view builds are reported separately and amortised over an epoch's batches) and with
fresh views every step (what a caller that never announces epochs gets). ``--breakdown`` times SGL and SimGCL
again with the InfoNCE replaced by a row-wise dot product (same propagations, no B x B similarity
matrix) and SimGCL also without noise, to show where the extra time goes. "step x LGCN" is the ratio of the
median step times; "epoch x LGCN" that of the estimated epochs, which also counts the batch sizes (the
shipped LightGCN ML-1M config trains with batch 8192, SGL and SimGCL with 4096: pass ``--batch-size`` to
compare equal batches). ``--epoch`` also runs one
whole epoch per backbone and reports the mean loss of its first and last 10 batches and whether any
term was NaN.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from unlearnrec.backbones import backbone_config, build_backbone
from unlearnrec.config import read_toml
from unlearnrec.data.datasets import load_dataset
from unlearnrec.data.graph import Graph
from unlearnrec.data.sampling import bpr_batches
from unlearnrec.runtime import tune_allocator
from unlearnrec.train.loop import adam

ROOT = Path(__file__).resolve().parents[1]


def model_config(name: str, dataset: str, dim: int | None) -> tuple[dict, int]:
    """([model] fields, batch size) of the shipped config, if any."""
    path = ROOT / "configs" / f"{name}-{dataset}.toml"
    raw = read_toml(path) if path.is_file() else {}
    model = dict(raw.get("model", {}))
    model.pop("backbone", None)
    if dim is not None:
        model["dim"] = dim
    return model, int(raw.get("train", {}).get("batch_size", 4096))


def step(model, graph, batch, opt, gen) -> dict[str, float]:
    terms = model.loss(graph, batch, generator=gen)
    opt.zero_grad(set_to_none=True)
    terms["total"].backward()
    opt.step()
    return {k: float(v.detach()) for k, v in terms.items()}


def time_backbone(name, data, graph, args, per_batch_views: bool = False) -> dict:
    cfg, batch_size = model_config(name, args.dataset, args.dim)
    if args.batch_size:
        batch_size = args.batch_size
    gen = torch.Generator().manual_seed(0)
    model = build_backbone(name, data.num_users, data.num_items, backbone_config(name, cfg), generator=gen)
    model = model.to(graph.device)
    opt = adam(model.parameters(), 1e-3)  # fit's optimiser
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    if not per_batch_views:
        model.on_epoch_start(graph, gen)
    epoch_hook = time.perf_counter() - t
    times = []
    batches = bpr_batches(data.train, batch_size, rng, graph.device)
    for k, batch in enumerate(batches):
        if k >= args.warmup + args.batches:
            break
        t = time.perf_counter()
        step(model, graph, batch, opt, gen)
        if graph.device.type == "cuda":
            torch.cuda.synchronize()
        if k >= args.warmup:
            times.append(time.perf_counter() - t)
    per_epoch = math.ceil(len(data.train) / batch_size)
    med = statistics.median(times)
    return {
        "batch_s": med,
        "hook_s": epoch_hook,
        "epoch_s": med * per_epoch + epoch_hook,
        "batches": per_epoch,
    }


class _Variant:
    """Temporarily swap a module attribute (a breakdown variant: InfoNCE or noise switched off)."""

    def __init__(self, obj, attr, value):
        self.obj, self.attr, self.value = obj, attr, value

    def __enter__(self):
        self.old = getattr(self.obj, self.attr)
        setattr(self.obj, self.attr, self.value)

    def __exit__(self, *exc):
        setattr(self.obj, self.attr, self.old)


def breakdown(data, graph, args) -> dict:
    """Step time of SGL / SimGCL with parts switched off, to see where the extra time goes."""
    from unlearnrec.backbones import base as base_mod
    from unlearnrec.backbones import simgcl as simgcl_mod

    def cheap(a, b, t):  # same propagations and backward, no B x B similarity matrix
        return (a * b).sum(-1).mean() / t

    def zero_noise(self, shape, dtype, device, generator=None):
        return torch.zeros(shape, dtype=dtype, device=device)

    out = {}
    with _Variant(base_mod, "info_nce", cheap):
        out["sgl, views but no InfoNCE"] = time_backbone("sgl", data, graph, args)
    with _Variant(base_mod, "info_nce", cheap):
        out["simgcl, no InfoNCE"] = time_backbone("simgcl", data, graph, args)
        with _Variant(simgcl_mod.SimGCL, "magnitudes", zero_noise):
            out["simgcl, no InfoNCE/noise"] = time_backbone("simgcl", data, graph, args)
    return out


def one_epoch(name, data, graph, args) -> dict:
    cfg, batch_size = model_config(name, args.dataset, args.dim)
    batch_size = args.batch_size or batch_size
    gen = torch.Generator().manual_seed(0)
    model = build_backbone(name, data.num_users, data.num_items, backbone_config(name, cfg), generator=gen)
    model = model.to(graph.device)
    opt = adam(model.parameters(), 1e-3)  # fit's optimiser
    t = time.perf_counter()
    model.on_epoch_start(graph, gen)
    rows = [
        step(model, graph, b, opt, gen)
        for b in bpr_batches(data.train, batch_size, np.random.default_rng(0), graph.device)
    ]
    secs = time.perf_counter() - t
    total = [r["total"] for r in rows]
    nan = any(not math.isfinite(v) for r in rows for v in r.values())
    first = {k: float(np.mean([r[k] for r in rows[:10]])) for k in rows[0]}
    last = {k: float(np.mean([r[k] for r in rows[-10:]])) for k in rows[0]}
    return {
        "seconds": secs,
        "first": first,
        "last": last,
        "nan": nan,
        "down": np.mean(total[-10:]) < np.mean(total[:10]),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="ml-1m")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--batches", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--dim", type=int, default=None, help="override the configs' embedding size")
    p.add_argument("--batch-size", type=int, default=None, help="override the configs' batch size")
    p.add_argument("--backbones", nargs="+", default=["lightgcn", "sgl", "simgcl", "mf"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--epoch", action="store_true", help="also run one full epoch per backbone")
    p.add_argument("--breakdown", action="store_true", help="also time SGL/SimGCL with parts switched off")
    args = p.parse_args(argv)
    allocator = tune_allocator()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_dataset(args.dataset, args.data_dir)
    graph = Graph.from_interactions(data.train, device=args.device)
    print(
        f"{args.dataset}: {data.num_users} users, {data.num_items} items, {len(data.train)} train edges; "
        f"device {args.device}, {torch.get_num_threads()} threads, {args.batches} timed batches, "
        f"allocator {allocator}"
    )
    res = {}
    for name in args.backbones:
        res[name] = time_backbone(name, data, graph, args)
        if name == "sgl":
            res["sgl/per-batch-views"] = time_backbone(name, data, graph, args, per_batch_views=True)
    if args.breakdown:
        res.update(breakdown(data, graph, args))
    base = res.get("lightgcn")
    print(
        f"{'backbone':<28}{'median batch s':>15}{'step x LGCN':>12}{'views s/epoch':>15}"
        f"{'epoch s (est.)':>16}{'epoch x LGCN':>14}"
    )
    for name, r in res.items():
        ratio = r["epoch_s"] / base["epoch_s"] if base else float("nan")
        step = r["batch_s"] / base["batch_s"] if base else float("nan")
        print(
            f"{name:<28}{r['batch_s']:>15.4f}{step:>12.2f}{r['hook_s']:>15.3f}{r['epoch_s']:>16.1f}{ratio:>14.2f}"
        )
    if args.epoch:
        print("\none full epoch each (lr 1e-3): mean of the first / last 10 batches")
        for name in args.backbones:
            r = one_epoch(name, data, graph, args)
            terms = "  ".join(f"{k} {r['first'][k]:.4f}->{r['last'][k]:.4f}" for k in r["first"])
            print(f"{name:<10}{r['seconds']:>8.1f}s  {terms}  nan={r['nan']}  down={r['down']}")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
