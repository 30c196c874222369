"""Where the forgetting goes under the authors' attack (issue 25): the user side and the item side apart.

The authors' adversarial request (METHOD.md section 10) is the union of two halves: each chosen
user's lowest-scored item (the *user side*) and each chosen item's lowest-scored user (the *item
side*). This script takes a finished adversarial grid from its cache (nothing is trained: every
model, attack and prepared encoder must be there already), forgets the grid's request with each of
its methods again, and measures MI-BF / MI-NG / AUC on each half separately, and which embedding
rows carry the forgetting: the same edges scored with only the *user* rows updated (item rows as
before forgetting) and with only the *item* rows updated.

    python benchmarks/forgetting_sides.py --grid experiments/ml-1m-table2-cpu-full-authors.toml \\
        --cache ~/.cache/unlearnrec/runs/ml-1m-table2-cpu-full-authors --json sides.json

Retrain's rows come from its cached model; GIF and CEU are re-run (10-30 s each on ML-1M) unless
``--skip gif ceu``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

from unlearnrec.eval.membership import edge_scores, forgetting_metrics, mean_prob
from unlearnrec.experiments.grid import groups, load_config
from unlearnrec.experiments.protocol import AttackConfig, adversarial_sides
from unlearnrec.experiments.store import Store
from unlearnrec.unlearn.registry import build_method

log = logging.getLogger("forgetting_sides")


def side_metrics(before, after, edges, known, reference, seed: int) -> dict[str, float]:
    """MI-BF / MI-NG / AUC on ``edges``, and MI-BF with only the user rows or only the item rows of
    ``after`` (the other side's rows as ``before``)."""
    fm = forgetting_metrics(before, after, edges, known, reference=reference, seed=seed)
    p_before = fm["forgotten_prob_before"]
    users_only = edge_scores(after[0], before[1], edges.users, edges.items)
    items_only = edge_scores(before[0], after[1], edges.users, edges.items)
    return {
        "edges": len(edges),
        "mi_bf": fm["mi_bf"],
        "mi_ng": fm["mi_ng"],
        "auc": fm["auc"],
        "mi_bf_user_rows": p_before / max(mean_prob(users_only), 1e-12),
        "mi_bf_item_rows": p_before / max(mean_prob(items_only), 1e-12),
        "w1_to_ref": fm.get("w1_to_ref", float("nan")),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--grid", required=True, help="the grid TOML (an adversarial grid whose cells have run)")
    p.add_argument("--cache", required=True, help="the grid's cache folder (models/, attacks/, prepared/)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--skip", nargs="*", default=[], help="method names to leave out (e.g. gif ceu)")
    p.add_argument("--finetune", action="store_true", help="also re-run the Ours(k > 0) cells (minutes each)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(a.threads)

    cfg = load_config(a.grid)
    if cfg.request != "adversarial":
        print(
            f"error: {a.grid}: request = {cfg.request!r}; this study needs an adversarial grid",
            file=sys.stderr,
        )
        return 2
    store = Store(cfg, a.cache, data_dir=a.data_dir)
    group = groups(cfg)[0]
    if not store.has_model(group):
        print(f"error: {a.cache} has no trained model of {group.tag}: run the grid first", file=sys.stderr)
        return 2
    data = store.dataset(group.dataset)
    att = store.forget_set(group)
    model = store.model(group)
    clean = store.clean_model(group)
    by_users, by_items = adversarial_sides(
        *clean.embeddings(),
        [data.train, data.val, data.test],
        AttackConfig(user_ratio=group.ratio, item_ratio=group.item_ratio, batch_size=cfg.attack_batch),
        group.seed,
    )
    if by_users.union(by_items).fingerprint() != att.edges.fingerprint():
        print(
            "error: the two sides rebuilt from the clean model do not make the cached request",
            file=sys.stderr,
        )
        return 2
    halves = {"user side": by_users, "item side": by_items, "all": att.edges}
    known = att.train.union(data.val).union(data.test)
    before = model.embeddings()
    retrain_spec = next((m for m in cfg.methods if m.name == "retrain"), None)
    reference = store.retrained(group, retrain_spec) if retrain_spec is not None else None
    ref_emb = reference.embeddings() if reference is not None else None

    rows = []
    for spec in cfg.methods:
        if spec.name in a.skip:
            continue
        if spec.name == "retrain":
            if reference is None:
                log.warning("no cached Retrain model: its row is left out")
                continue
            after, seconds = ref_emb, None
        else:
            if spec.config.get("finetune_epochs", 0) and not a.finetune:
                continue
            method = build_method(spec.name, dict(spec.config), group.seed)
            method.set_validation(data.val)
            folder = store.prepared_dir(group, spec)
            if folder.is_dir():
                if not method.load_prepared(folder, model):
                    print(
                        f"error: {spec.title}: the cached prepared state {folder} is unreadable",
                        file=sys.stderr,
                    )
                    return 2
            elif spec.name == "unlearnrec":
                print(
                    f"error: {spec.title}: no pre-trained encoder in {folder}: run the grid first",
                    file=sys.stderr,
                )
                return 2
            else:
                method.prepare(model, att.train)  # GIF / CEU: nothing to prepare
            t = time.perf_counter()
            after = method.forget(model, att.train, store.request(group)).model.embeddings()
            seconds = time.perf_counter() - t
        for half, edges in halves.items():
            m = side_metrics(before, after, edges, known, ref_emb, group.seed)
            rows.append({"method": spec.title, "half": half, "forget_s": seconds, **m})

    n_items, n_users = len(np.unique(by_users.items)), len(np.unique(by_items.users))
    print(f"{group.tag}: {len(by_users)} user-side edges (on {n_items} distinct items) + "
          f"{len(by_items)} item-side edges (on {n_users} distinct users), "
          f"{by_users.intersects(by_items)} on both, {len(att.edges)} in the request")  # fmt: skip
    head = "| method | half | edges | MI-BF | MI-NG | AUC | MI-BF, user rows only | MI-BF, item rows only |"
    print(head)
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['method']} | {r['half']} | {r['edges']} | {r['mi_bf']:.2f} | {r['mi_ng']:.2f} | "
              f"{r['auc']:.3f} | {r['mi_bf_user_rows']:.2f} | {r['mi_bf_item_rows']:.2f} |")  # fmt: skip
    if a.json:
        Path(a.json).write_text(json.dumps({"group": group.tag, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
