"""Data-parallel training steps on 1 and 2 processes (torch.distributed, gloo): steps per second and the
all-reduce's share of a step.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_distributed.py --datasets ml-1m gowalla \\
        --backbones lightgcn --steps 12 --warmup 2

For every (dataset, backbone) it runs ``fit`` (the library's loop, unchanged) for ``--warmup +
--steps`` optimiser steps, once in one process and once under ``torchrun --nproc-per-node 2`` on
127.0.0.1 (gloo, one intra-op thread per process), and reports per step (medians over the timed
steps): the wall time, the all-reduce of the gradients and loss terms (``comm``), the time a rank
waited for the other before it (``wait``: a barrier taken just before the all-reduce, so ``comm``
is the collective alone), and the product ÂX (N x d), the unit of the propagation that every rank
repeats. ``bytes`` is what each all-reduce carries (the N x d gradient of E⁰ in float32).

The single process also times ``half / whole``: steps on part 0 of 2 of each batch (what one rank
of two computes) against steps on the whole batch, alternated step by step on the same batches
(``--ab-steps`` pairs; medians and the median of the per-step ratio, in wall time and in this
process's CPU time, which other jobs on a shared machine delay but do not add to), without
communication or a second process competing for the cores. The 2-process run also times a
one-float all-reduce (the fixed latency of a collective). ``load`` is the highest 1-minute load
average seen at the start or end of a run (the machine is shared).

On a 2-core machine two processes share the cores, so the point is the communication share, not
a speed-up. The model is the shipped ``configs/<backbone>-<dataset>.toml`` (dim, layers, batch
size) unless ``--dim`` / ``--batch-size`` are given.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


class _Enough(Exception):
    """Raised from ``on_step`` to end ``fit`` after the wanted number of steps (on every rank at once)."""


def child(args) -> int:
    """One rank (or the single process): time ``fit``'s steps; rank 0 writes the JSON row."""
    from unlearnrec.runtime import tune_allocator

    tune_allocator()
    import torch
    import torch.distributed as dist

    sys.path.insert(0, str(HERE))
    from bench_backbones import model_config

    from unlearnrec.backbones import build_backbone
    from unlearnrec.data.datasets import load_dataset
    from unlearnrec.data.graph import Graph, propagate
    from unlearnrec.train import distributed
    from unlearnrec.train.loop import TrainConfig, fit

    torch.set_num_threads(args.threads)
    part = distributed.init_from_env("cpu")
    data = load_dataset(args.dataset, args.data_dir)
    graph = Graph.from_interactions(data.train)
    mcfg, batch = model_config(args.backbone, args.dataset, args.dim)
    batch = args.batch_size or batch
    model = build_backbone(
        args.backbone, data.num_users, data.num_items, mcfg, generator=torch.Generator().manual_seed(0)
    )
    waits: list[float] = []
    comms: list[float] = []
    real = distributed.all_reduce_step

    def timed(params, values):  # a barrier first: what is left is the collective alone
        t = time.perf_counter()
        dist.barrier()
        t1 = time.perf_counter()
        out = real(params, values)
        waits.append(t1 - t)
        comms.append(time.perf_counter() - t1)
        return out

    distributed.all_reduce_step = timed
    stamps: list[float] = []
    total = args.warmup + args.steps

    def on_step(step: int, terms: dict) -> None:
        stamps.append(time.perf_counter())
        if step >= total:
            raise _Enough

    def run_fit(loss_fn=None) -> list[float]:
        stamps.clear()
        cfg = TrainConfig(epochs=1_000, batch_size=batch, lr=1e-3, seed=0, patience=0)
        start = time.perf_counter()
        try:
            fit(model, graph, cfg, on_step=on_step, loss_fn=loss_fn)
        except _Enough:
            pass
        return [b - a for a, b in zip([start, *stamps[:-1]], stamps, strict=True)][args.warmup :]

    load = os.getloadavg()[0]
    times = run_fit()
    ab: dict[str, list[float]] = {}
    if part.world == 1:  # what one rank of two computes (its part of each batch), without communication
        ab = interleaved(model, graph, data.train, batch, args.warmup + args.ab_steps)
        ab = {k: v[args.warmup :] for k, v in ab.items()}
    latency = []
    if part.world > 1:  # a one-float all-reduce: the fixed cost of a collective
        one = torch.zeros(1)
        for _ in range(20):
            dist.barrier()
            t = time.perf_counter()
            dist.all_reduce(one)
            latency.append(time.perf_counter() - t)
    product = []
    x = model.e0.detach()
    with torch.no_grad():
        for _ in range(args.steps):
            t = time.perf_counter()
            propagate(graph.adj, x)
            product.append(time.perf_counter() - t)
    row = {
        "dataset": args.dataset,
        "backbone": args.backbone,
        "world": part.world,
        "rank": part.rank,
        "nodes": graph.num_nodes,
        "nnz": int(graph.adj.values().numel()),
        "dim": model.dim,
        "layers": getattr(model, "layers", 0),
        "batch": batch,
        "steps": len(times),
        "step_s": statistics.median(times),
        "wait_s": statistics.median(waits[args.warmup :]) if waits else 0.0,
        "comm_s": statistics.median(comms[args.warmup :]) if comms else 0.0,
        "bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
        "product_s": statistics.median(product),
        **_ab_summary(ab),
        "latency_s": statistics.median(latency) if latency else None,
        "load": [load, os.getloadavg()[0]],
    }
    rows = [row]
    if part.world > 1:
        rows = [None] * part.world
        dist.all_gather_object(rows, row)
    if part.is_main:
        Path(args.json_out).write_text(json.dumps(rows))
    distributed.finish()
    return 0


def interleaved(model, graph, train, batch_size: int, steps: int) -> dict[str, list[float]]:
    """Seconds of ``steps`` optimiser steps on the whole batch and on part 0 of 2 of the same batch,
    alternated step by step (which one goes first alternates too), so that the machine's load
    drifts over both alike: wall and CPU seconds of this process (one intra-op thread: the CPU
    time is the step's own work, which other jobs on a shared machine delay but do not add to)."""
    import numpy as np
    import torch

    from unlearnrec.data.sampling import bpr_batches
    from unlearnrec.train.loop import adam

    opt = adam([p for p in model.parameters() if p.requires_grad], 1e-3)
    gen = torch.Generator().manual_seed(1)
    model.train()
    model.on_epoch_start(graph, gen)
    batches = bpr_batches(train, batch_size, np.random.default_rng(1))
    out: dict[str, list[float]] = {"whole": [], "half": [], "whole_cpu": [], "half_cpu": []}
    for i in range(steps):
        b = next(batches)
        for parted in (False, True) if i % 2 == 0 else (True, False):
            t, c = time.perf_counter(), time.process_time()
            terms = model.loss(graph, b.parted(0, 2) if parted else b, generator=gen)
            opt.zero_grad(set_to_none=True)
            terms["total"].backward()
            opt.step()
            key = "half" if parted else "whole"
            out[key].append(time.perf_counter() - t)
            out[f"{key}_cpu"].append(time.process_time() - c)
    return out


def _ab_summary(ab: dict[str, list[float]]) -> dict:
    """Medians of the half / whole steps and of their per-step ratios, wall and CPU."""
    if not ab:
        return {}
    out = {}
    for suffix in ("", "_cpu"):
        whole, half = ab[f"whole{suffix}"], ab[f"half{suffix}"]
        out[f"whole_step{suffix}_s"] = statistics.median(whole)
        out[f"half_step{suffix}_s"] = statistics.median(half)
        out[f"half_ratio{suffix}"] = statistics.median(h / w for h, w in zip(half, whole, strict=True))
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(args, dataset: str, backbone: str, world: int) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "row.json"
        tail = ["--child", "--dataset", dataset, "--backbone", backbone, "--json-out", str(out)]
        for k in ("steps", "warmup", "ab_steps", "threads", "dim", "batch_size", "data_dir"):
            v = getattr(args, k)
            if v is not None:
                tail += [f"--{k.replace('_', '-')}", str(v)]
        script = [str(Path(__file__).resolve()), *tail]
        if world == 1:
            cmd = [sys.executable, *script]
        else:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(world),
                   "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{_free_port()}",
                   *script]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        src = str(ROOT / "src")
        env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        rc = subprocess.run(cmd, env=env).returncode
        if not out.is_file():
            print(f"{dataset}/{backbone}/{world}: failed (exit status {rc})", file=sys.stderr)
            return []
        if rc:  # the figures were written: the failure came after them (kept, and said so)
            print(f"{dataset}/{backbone}/{world}: exit status {rc} after writing", file=sys.stderr)
        return json.loads(out.read_text())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--datasets", nargs="+", default=["ml-1m", "gowalla"])
    p.add_argument("--backbones", nargs="+", default=["lightgcn"])
    p.add_argument("--worlds", type=int, nargs="+", default=[1, 2])
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--ab-steps", type=int, default=10, help="whole/half step pairs (one process)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads per process")
    p.add_argument("--dim", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--json", default=None, help="also write every rank's row to this file")
    # the child's own arguments
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--dataset", help=argparse.SUPPRESS)
    p.add_argument("--backbone", help=argparse.SUPPRESS)
    p.add_argument("--json-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(args)
    rows = []
    for dataset in args.datasets:
        for backbone in args.backbones:
            for world in args.worlds:
                rows.extend(run(args, dataset, backbone, world))
                if args.json:  # as it goes: a later failure loses nothing
                    Path(args.json).write_text(json.dumps(rows, indent=1))
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


def _half(r: dict) -> str:
    if r.get("half_ratio") is None:
        return ""
    return (
        f"wall {r['half_step_s'] * 1e3:.0f} / {r['whole_step_s'] * 1e3:.0f} ms = {r['half_ratio']:.2f}; "
        f"CPU {r['half_step_cpu_s'] * 1e3:.0f} / {r['whole_step_cpu_s'] * 1e3:.0f} ms "
        f"= {r['half_ratio_cpu']:.2f}"
    )


def _ms(v, digits: int = 1) -> str:
    return "" if v is None else f"{v * 1e3:.{digits}f} ms"


def table(rows: list[dict]) -> str:
    """One line per (dataset, backbone, processes): medians over ranks of each rank's median."""
    out = [
        "| dataset | backbone | N | nnz | d | batch | procs | step | steps/s | x 1 proc | all-reduce "
        "| share | wait | MB | ÂX | half / whole step | 1-float all-reduce | load |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    single = {}
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["backbone"], r["world"]), []).append(r)
    for (ds, bb, world), rs in groups.items():
        med = {k: statistics.median(r[k] for r in rs) for k in ("step_s", "comm_s", "wait_s", "product_s")}
        if world == 1:
            single[(ds, bb)] = med["step_s"]
        base = single.get((ds, bb))
        r0 = rs[0]
        out.append(
            f"| {ds} | {bb} | {r0['nodes']:,} | {r0['nnz']:,} | {r0['dim']} | {r0['batch']} | {world} "
            f"| {med['step_s'] * 1e3:.1f} ms | {1 / med['step_s']:.2f} "
            f"| {base / med['step_s']:.2f} | {med['comm_s'] * 1e3:.2f} ms "
            f"| {med['comm_s'] / med['step_s']:.1%} | {med['wait_s'] * 1e3:.1f} ms "
            f"| {r0['bytes'] / 2**20:.1f} | {med['product_s'] * 1e3:.1f} ms "
            f"| {_half(r0)} | {_ms(r0.get('latency_s'), 3)} "
            f"| {max(max(r['load']) for r in rs):.1f} |"
            if base
            else f"| {ds} | {bb} | {world} | (no single-process baseline) |"
        )
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
