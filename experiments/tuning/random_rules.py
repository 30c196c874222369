"""Ours(0) on random requests (the paper's Table 5 setting) under each forget-time rule (issue 25).

One encoder is pre-trained (the paper's rule, the ML-1M authors'-protocol grid's tuned settings:
10 epochs, ratio 0.2, batch 4096, lr 5e-3, lambda_p 1.25e-3) on a clean trained model and kept in
``ENCODER_DIR`` (reused when there). Random requests of 0.1%, 0.5%, 1% and 2% of the training edges
(seed 123; ``--lr`` / ``--lambda-p`` change the pre-training of a new encoder) are then
forgotten with ``influence_on`` switched at forget time to each rule, and each
row gives the test Recall@20 as a share of the original model's (Table 5's measure), MI-BF / MI-NG /
AUC on the request; ``--no-layer0`` also drops H⁰ from the readout at forget time. One JSON line per
row is appended to ``OUT``.

    UNLEARNREC_DATA=/work/shared/data PYTHONPATH=src python experiments/tuning/random_rules.py \\
        ~/.cache/unlearnrec/runs/ml-1m-table2-cpu-full-authors/models/c27c6ea0898a6337 \\
        ~/.cache/unlearnrec/runs/clean-encoder-ml-1m-both-10 random-rules.jsonl

(the model: the clean dim-128 LightGCN of ``experiments/ml-1m-table2-cpu-full-authors.toml``.)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from unlearnrec.data.datasets import load_dataset
from unlearnrec.eval.membership import forgetting_metrics
from unlearnrec.model import TrainedModel
from unlearnrec.unlearn.base import Request
from unlearnrec.unlearn.unlearnrec import UnlearnRec, UnlearnRecConfig

RATIOS = (0.001, 0.005, 0.01, 0.02)
RULES = ("both", "hubs", "items")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="a trained model's folder (its dataset is loaded from UNLEARNREC_DATA)")
    p.add_argument("encoder_dir", help="where the pre-trained encoder is kept (written if absent)")
    p.add_argument("out", help="JSON lines, appended")
    p.add_argument("--no-layer0", action="store_true", help="leave H⁰ out of the readout at forget time")
    p.add_argument("--lr", type=float, default=5e-3, help="pre-training lr (a new encoder only)")
    p.add_argument("--lambda-p", type=float, default=1.25e-3, help="pre-training λ_p (a new encoder only)")
    a = p.parse_args()
    torch.set_num_threads(1)
    model = TrainedModel.load(a.model)
    data = load_dataset(model.dataset, None, val_ratio=0.0, seed=0)
    train = model.train
    base = model.evaluate(data, "test")["recall@20"]
    enc_dir = Path(a.encoder_dir)
    if (enc_dir / "meta.json").is_file():
        method = UnlearnRec.from_encoder(enc_dir, model)
    else:
        cfg = UnlearnRecConfig(epochs=10, ratio=0.2, batch_size=4096, lr=a.lr, lambda_p=a.lambda_p)
        method = UnlearnRec(cfg, seed=0)
        t = time.perf_counter()
        method.prepare(model, train)
        print(f"pre-trained in {time.perf_counter() - t:.0f} s", flush=True)
        method.save_prepared(enc_dir)
    known = train.union(data.test)
    before = model.embeddings()
    rng = np.random.default_rng(123)
    for ratio in RATIOS:
        idx = np.sort(rng.choice(len(train), size=max(1, round(ratio * len(train))), replace=False))
        request = Request(train.subset(idx))
        for rule in RULES:
            method.encoder.influence_on = rule
            method.encoder.num_users = train.num_users
            method.encoder.readout_layer0 = not a.no_layer0
            res = method.forget(model, train, request)
            recall = res.model.evaluate(data, "test")["recall@20"]
            fm = forgetting_metrics(before, res.model.embeddings(), request.edges, known, seed=0)
            row = {"encoder": {"lr": method.config.lr, "lambda_p": method.config.lambda_p},
                   "layer0": not a.no_layer0, "ratio": ratio, "edges": len(request.edges), "rule": rule,
                   "recall@20": recall, "share": recall / base, "forget_s": res.seconds,
                   **{m: fm[m] for m in ("mi_bf", "mi_ng", "auc")}}  # fmt: skip
            print(json.dumps(row), flush=True)
            with Path(a.out).open("a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
