"""What a resumable training costs: the training state's fingerprint, save and load against one training
epoch of the same model, measured in one process on a real dataset (or a synthetic graph of its size).

``fit(checkpoint=DIR)`` hashes the model's initial state once, saves the whole state (weights, Adam's two
moments, both random streams) at most every ``checkpoint_every`` seconds (the grid runner's default: 600)
and once more when training ends; a resumed call loads it once. Each is timed ``--repeats`` times and the
medians are printed with their ratio to the median training epoch of the same model (a few epochs of the
dataset's CPU recipe, also timed here), and the overhead of saving every 600 s.

    UNLEARNREC_DATA=/work/shared/data PYTHONPATH=src python benchmarks/resume_cost.py --dataset yelp2018
    PYTHONPATH=src python benchmarks/resume_cost.py --synthetic 31668 38048 1237259   # Yelp2018's size
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from unlearnrec.backbones import build_backbone
from unlearnrec.data.graph import Graph
from unlearnrec.data.interactions import Interactions
from unlearnrec.train import resume
from unlearnrec.train.loop import TrainConfig, adam, fit


def _train(args):
    if args.synthetic:  # uniform random edges (deduplicated): only the sizes matter here
        nu, ni, edges = args.synthetic
        rng = np.random.default_rng(0)
        train = Interactions.from_pairs(
            rng.integers(0, nu, edges), rng.integers(0, ni, edges), nu, ni, dedupe=True
        )
        return train, f"synthetic {nu:,} x {ni:,}, {len(train):,} edges"
    from unlearnrec.data.datasets import load_dataset

    data = load_dataset(args.dataset, args.data_dir, val_ratio=0.0)
    return data.train, f"{args.dataset} ({len(data.train):,} training edges)"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="yelp2018")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--synthetic", type=int, nargs=3, metavar=("USERS", "ITEMS", "EDGES"))
    p.add_argument("--backbone", default="lightgcn")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--epochs", type=int, default=2, help="training epochs timed (default 2)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    train, what = _train(a)
    graph = Graph.from_interactions(train)
    cfg = TrainConfig(epochs=a.epochs, batch_size=8192, lr=1e-2, patience=0, seed=0, threads=a.threads)

    def model():
        gen = torch.Generator().manual_seed(0)
        return build_backbone(a.backbone, train.num_users, train.num_items, {"dim": a.dim}, generator=gen)

    net = model()
    res = fit(net, graph, cfg)
    epoch = statistics.median(row["epoch_seconds"] for row in res.history)
    params = [q for q in net.parameters() if q.requires_grad]
    opt = adam(params, cfg.lr)
    (sum(q.sum() for q in params) * 0).backward()
    opt.step()  # Adam's moments exist, as after any step
    rng, gen = np.random.default_rng(0), torch.Generator().manual_seed(0)
    state = resume.LoopState(epoch=1)
    fp_s, save_s, load_s = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(tmp) / "state"
        for _ in range(a.repeats):
            t = time.perf_counter()
            fp = resume.fingerprint(net, params, cfg, train, None)
            fp_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            resume.save(where, fp, state, net, None, opt, rng, gen)
            save_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            assert resume.load(where, fp, net, opt, rng, gen) is not None
            load_s.append(time.perf_counter() - t)
        size = sum(f.stat().st_size for f in where.iterdir())
    med = {k: statistics.median(v) for k, v in (("fingerprint", fp_s), ("save", save_s), ("load", load_s))}
    out = {
        "data": what,
        "backbone": a.backbone,
        "dim": a.dim,
        "threads": a.threads,
        "epoch_seconds": epoch,
        "state_mb": size / 2**20,
        **{f"{k}_seconds": v for k, v in med.items()},
        **{f"{k}_per_epoch": v / epoch for k, v in med.items()},
        "overhead_at_600s": med["save"] / 600.0,
    }
    print(
        f"{what}, {a.backbone} dim {a.dim}, {a.threads} thread(s): a training epoch {epoch:.2f} s (median of "
        f"{len(res.history)}); the state {size / 2**20:.1f} MB"
    )
    for k, v in med.items():
        print(f"  {k:<12} {v * 1000:8.1f} ms  = {v / epoch:.2%} of an epoch (median of {a.repeats})")
    print(f"  saving every 600 s costs {med['save'] / 600:.3%} of the training time")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
