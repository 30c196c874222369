"""UnlearnRec on a trained model (issue 4): pre-train the encoder, then serve a random edge
request and a whole-user request with Ours(0) and Ours(k); Recall@20 / NDCG@20 relative to the
original model (test and validation), MI-BF, MI-NG, seconds. Retraining comparisons are separate.

    flock /tmp/unlearnrec-heavy.lock timeout 900 .venv/bin/python benchmarks/unlearnrec_realdata.py \\
        --model /work/runs/models/ml-1m-lightgcn --out runs/issue4/ml-1m-lightgcn
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from unlearnrec.config import from_dict, read_toml, to_dict
from unlearnrec.data.requests import sample_edges, sample_users
from unlearnrec.eval.membership import forgetting_metrics
from unlearnrec.model import TrainedModel
from unlearnrec.unlearn.base import Request
from unlearnrec.unlearn.unlearnrec import UnlearnRec, UnlearnRecConfig


def rel(a: float, b: float) -> float:
    return a / b if b else float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True, help="folder for the encoder, loss curve and results")
    p.add_argument("--config", default=None, help="TOML of UnlearnRecConfig keys")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--ratio", type=float, default=0.005, help="random edge request size")
    p.add_argument("--users", type=int, default=10, help="whole users in the user request")
    p.add_argument("--finetune", type=int, nargs="+", default=[0, 3])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = TrainedModel.load(args.model)
    data = model.load_dataset()
    raw = read_toml(args.config) if args.config else {}
    if args.epochs is not None:
        raw["epochs"] = args.epochs
    cfg = from_dict(UnlearnRecConfig, raw, "unlearnrec")
    method = UnlearnRec(cfg, seed=args.seed)
    enc_dir = out / "encoder"
    t = time.perf_counter()
    if not method.load_prepared(enc_dir, model):
        method.prepare(model, model.train)
        method.save_prepared(enc_dir)
    prep_s = time.perf_counter() - t
    (out / "loss_curve.json").write_text(json.dumps(method.history, indent=1))
    base = {"test": model.evaluate(data, "test"), "val": model.evaluate(data, "val")}
    rng = np.random.default_rng(args.seed)
    requests = {
        f"edges_{args.ratio:g}": Request(sample_edges(model.train, args.ratio, rng)),
        f"users_{args.users}": Request.of_users(model.train, sample_users(model.train, args.users, rng)),
    }
    known = data.train.union(data.val).union(data.test)
    before = model.embeddings()
    rows = []
    for k in args.finetune:  # every Ours(0) first: the cheap rows survive a timeout
        for rname, req in requests.items():
            method.config = from_dict(UnlearnRecConfig, {**to_dict(cfg), "finetune_epochs": k})
            res = method.forget(model, model.train, req)
            new = res.model
            test, val = new.evaluate(data, "test"), new.evaluate(data, "val")
            fm = forgetting_metrics(before, new.embeddings(), req.edges, known, seed=args.seed)
            row = {
                "request": rname,
                "edges": len(req.edges),
                "method": f"Ours({k})",
                "seconds": res.seconds,
                "peak_memory_mb": res.peak_memory_mb,
                "recall@20": test["recall@20"],
                "ndcg@20": test["ndcg@20"],
                "recall_rel": rel(test["recall@20"], base["test"]["recall@20"]),
                "ndcg_rel": rel(test["ndcg@20"], base["test"]["ndcg@20"]),
                "val_recall_rel": rel(val["recall@20"], base["val"]["recall@20"]),
                **{m: fm[m] for m in ("mi_bf", "mi_ng", "mi_ng_before", "auc", "auc_before")},
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {
        "model": args.model,
        "config": to_dict(cfg),
        "pretrain_seconds": prep_s,
        "pretrain_epochs": len(method.history),
        "original": base,
        "rows": rows,
    }
    (out / "results.json").write_text(json.dumps(result, indent=1))
    print(f"pre-training {len(method.history)} epochs, {prep_s:.1f}s; results in {out / 'results.json'}")


if __name__ == "__main__":
    main()
