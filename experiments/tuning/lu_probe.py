"""Issue 25: L_u at fine-tuning weight, the exploration behind select_default.py's λ_u candidates.

Serves the held-out attack V of ``experiments/ml-1m-authors-validation-cpu.toml`` and the seed-1
validation draws of select_default.py (random 0.1/0.5/1/2%, 1% of the users) under forget-time
settings that select_default.py does not list: the λ_u / steps / lr sweep that led to its family,
a heavier L_p (``finetune_lambda_p``) and a fixed MLP (``finetune_mlp = false``). Validation only:
the test split is never read. One JSON line per (request, setting) on stdout.

    UNLEARNREC_DATA=/work/shared/data PYTHONPATH=src python experiments/tuning/lu_probe.py \\
        --requests V random0.001 random0.02 users0.01
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import torch

from unlearnrec.eval.membership import forgetting_metrics
from unlearnrec.experiments.grid import load_config
from unlearnrec.experiments.pretrain_study import the_group
from unlearnrec.experiments.runner import default_cache
from unlearnrec.experiments.store import Store

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("select_default", HERE / "select_default.py")
sd = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sd)

FT = {"forget_rule": "hubs", "finetune_epochs": 1, "finetune_batch_size": 8192}
SETTINGS: dict[str, dict] = {
    "hubs": {"forget_rule": "hubs"},
    **{
        f"hubs, {n} steps, lr {lr:g}, λ_u {lu:g}": {
            **FT,
            "finetune_steps": n,
            "finetune_lr": lr,
            **({"finetune_lambda_u": lu} if lu != 0.5 else {}),
        }
        for n, lr, lu in (
            (20, 1e-3, 0.5),
            (20, 1e-3, 5),
            (20, 1e-3, 50),
            (20, 3e-4, 50),
            (10, 5e-3, 50),
            (20, 5e-3, 50),
            (20, 5e-3, 500),
            (40, 5e-3, 500),
            (80, 5e-3, 500),
            (40, 2e-3, 500),
            (80, 2e-3, 5000),
            (80, 1e-3, 5000),
        )
    },
    **{
        f"hubs, 40 steps, lr 0.005, λ_u 5000, λ_p {lp:g}": {
            **FT,
            "finetune_steps": 40,
            "finetune_lr": 5e-3,
            "finetune_lambda_u": 5000.0,
            "finetune_lambda_p": lp,
        }
        for lp in (0.01, 0.1, 1.0)
    },
    **{
        f"hubs, {n} steps, lr 0.005, λ_u {lu:g}, MLP fixed": {
            **FT,
            "finetune_steps": n,
            "finetune_lr": 5e-3,
            "finetune_lambda_u": lu,
            "finetune_mlp": False,
        }
        for n, lu in ((20, 5000.0), (40, 5000.0), (40, 500.0))
    },
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", nargs="+", default=["V"], help="V and/or random0.001 ... users0.01")
    p.add_argument("--only", default="", help="only the settings whose name contains this")
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    settings = {k: v for k, v in SETTINGS.items() if a.only in k}
    if "V" in a.requests:
        vcfg = load_config(HERE.parents[1] / "experiments/ml-1m-authors-validation-cpu.toml")
        store = Store(vcfg, default_cache())
        group = the_group(vcfg)
        spec = next(m for m in vcfg.methods if m.name == "unlearnrec" and m.config.get("epochs"))
        enc = store.prepared_dir(group, spec)
        data, att, model = store.dataset(group.dataset), store.forget_set(group), store.model(group)
        ref, known, before = sd.input_val_recall(model, data), att.train.union(data.val), model.embeddings()
        for name, s in settings.items():
            res, val = sd.forget(enc, model, data, att.train, store.request(group), s)
            fm = forgetting_metrics(before, res.model.embeddings(), att.edges, known, seed=group.seed)
            row = {"request": "V", "setting": name, "val_share": round(val / ref, 4)}
            row.update({m: round(fm[m], 3) for m in ("mi_bf", "mi_ng", "auc")})
            print(json.dumps({**row, "seconds": round(res.seconds, 2)}, ensure_ascii=False), flush=True)
    draws = [r for r in a.requests if r != "V"]
    if draws:
        kcfg = load_config(HERE.parents[1] / "experiments/kinds/lightgcn-random.toml")
        store = Store(kcfg, default_cache())
        group = sd.groups(kcfg)[0]
        spec = next(m for m in kcfg.methods if m.name == "unlearnrec" and "influence_on" not in m.config)
        folder = store.prepared_dir(group, spec)
        data, model = store.dataset(group.dataset), store.model(group)
        ref = sd.input_val_recall(model, data)
        for kind, ratio in sd.VALIDATION_DRAWS:
            if f"{kind}{ratio:g}" not in draws:
                continue
            request = store.request(sd.validation_group(kcfg, group, kind, ratio, a.seed))
            for name, s in settings.items():
                res, val = sd.forget(folder, model, data, model.train, request, s)
                row = {"request": f"{kind} {ratio:g} (seed {a.seed})", "setting": name}
                row.update(val_share=round(val / ref, 4), seconds=round(res.seconds, 2))
                print(json.dumps(row, ensure_ascii=False), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
