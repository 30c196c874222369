"""Issue 25: another forget-time rule on the encoders the Ours(0) pre-training study kept.

The study (``benchmarks/ours0_pretrain_study.py``) keeps the encoder of every checkpoint under
``CACHE/ours0-pretrain-study/encoders/<role>-<key>/epoch-NNN``. This script loads each, switches
``influence_on`` to ``--rule`` at forget time (the encoder's H⁰ and η as pre-trained, under the
paper's rule by default) and measures Ours(k) exactly as the study does: Recall@20 / NDCG@20 on the
setup's split (``validation``: its held-out 10%, the test split never read; ``evaluated``: test),
MI-BF, MI-NG and AUC on the setup's request. One JSON line per (checkpoint, rule, k) is appended to
``--out`` (a re-run skips the lines it has).

    UNLEARNREC_DATA=/work/shared/data PYTHONPATH=src python benchmarks/forget_rule_probe.py \\
        --grid experiments/ml-1m-authors-validation.toml \\
        --cache ~/.cache/unlearnrec/runs/ml-1m-authors-validation --role validation \\
        --rules both hubs --out experiments/results/ours0-pretrain-study/forget-rules.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from unlearnrec.eval.membership import forgetting_metrics
from unlearnrec.experiments.grid import load_config
from unlearnrec.experiments.pretrain_study import ROLES, STUDY_DIR, the_group
from unlearnrec.experiments.store import Store
from unlearnrec.unlearn.unlearnrec import UnlearnRec
from unlearnrec.unlearn.unlearnrec.encoder import INFLUENCE_ON

#: the fine-tuning of Ours(k > 0), as the study's (bench_forget.py's settings)
FINETUNE = {"finetune_batch_size": 8192, "finetune_lr": 5e-3}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--grid", required=True)
    p.add_argument("--cache", required=True)
    p.add_argument("--role", choices=sorted(ROLES), required=True)
    p.add_argument("--key", default="", help="the study's encoder key (default: every kept encoder set)")
    p.add_argument("--rules", nargs="+", choices=INFLUENCE_ON, default=["both", "hubs"])
    p.add_argument("--ks", nargs="+", type=int, default=[0])
    p.add_argument("--epochs", nargs="*", type=int, default=[], help="only these checkpoints (default: all)")
    p.add_argument("--out", required=True, help="JSON lines, appended")
    p.add_argument("--data-dir", default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(1)

    cfg = load_config(a.grid)
    store = Store(cfg, a.cache, data_dir=a.data_dir)
    group = the_group(cfg)
    if not store.has_model(group):
        print(f"error: {a.cache} has no trained model of {group.tag}: run the grid first", file=sys.stderr)
        return 2
    folders = sorted(Path(a.cache, STUDY_DIR, "encoders").glob(f"{a.role}-{a.key}*/epoch-*"))
    if not folders:
        print(f"error: no kept encoder of role {a.role!r} under {a.cache}/{STUDY_DIR}", file=sys.stderr)
        return 2
    data, att, model = store.dataset(group.dataset), store.forget_set(group), store.model(group)
    split = ROLES[a.role]
    known = att.train.union(data.val) if split == "val" else att.train.union(data.val).union(data.test)
    before = model.embeddings()
    out = Path(a.out)
    done = set()
    if out.is_file():
        done = {(r["encoder"], r["rule"], r["k"]) for r in map(json.loads, out.read_text().splitlines())}
    for folder in folders:
        name = f"{folder.parent.name}/{folder.name}"
        if a.epochs and int(folder.name.split("-")[1]) not in a.epochs:
            continue
        for rule in a.rules:
            for k in a.ks:
                if (name, rule, k) in done:
                    continue
                serving = {"finetune_epochs": k, **FINETUNE} if k else {}
                method = UnlearnRec.from_encoder(folder, model, **serving)
                method.encoder.influence_on = rule
                method.encoder.num_users = model.train.num_users
                method.set_validation(data.val)
                res = method.forget(model, att.train, store.request(group))
                metrics = {m: v for m, v in res.model.evaluate(data, split).items() if m != "users"}
                fm = forgetting_metrics(before, res.model.embeddings(), att.edges, known, seed=group.seed)
                row = {
                    "role": a.role,
                    "encoder": name,
                    "pretrained_rule": method.config.influence_on,
                    "epoch": int(folder.name.split("-")[1]),
                    "rule": rule,
                    "k": k,
                    "split": split,
                    **metrics,
                    **{m: fm[m] for m in ("mi_bf", "mi_ng", "auc")},
                    "forget_seconds": res.seconds,
                }
                print(json.dumps(row), flush=True)
                with out.open("a") as f:
                    f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
