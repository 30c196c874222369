"""Full-ranking evaluation of every test user of a dataset (issue 2, target on gowalla: under 3 s).

Times ``evaluate_embeddings`` (scores against all items, training and validation items masked,
top-20, Recall@20 and NDCG@20) over all users with a test item, median of ``--repeats`` runs, and
separately the one ``embed()`` (3-layer propagation) that precedes it. The embeddings are a
LightGCN's at initialisation: the cost of scoring, masking and top-k does not depend on the
values. The floor printed beside it is the dense score product alone (users x dim x items).

    flock /tmp/unlearnrec-heavy.lock timeout 900 .venv/bin/python benchmarks/bench_eval.py --dataset gowalla
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from unlearnrec.backbones import build_backbone
from unlearnrec.data.datasets import load_dataset
from unlearnrec.data.graph import Graph
from unlearnrec.eval.ranking import evaluate_embeddings


def _median_time(fn, repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="gowalla")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, nargs="+", default=[2048, 4096])
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    data = load_dataset(a.dataset, a.data_dir)
    graph = Graph.from_interactions(data.train)
    model = build_backbone(
        "lightgcn", data.num_users, data.num_items, {"dim": a.dim}, generator=torch.Generator().manual_seed(0)
    )
    print(
        f"{a.dataset}: {data.num_users} users x {data.num_items} items, test {len(data.test)} edges; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads",
        flush=True,
    )
    with torch.no_grad():
        t_embed, _ = _median_time(lambda: model.embed(graph), a.repeats)
        ue, ie = model.embed(graph)
    users = int((data.test.to_csr().getnnz(axis=1) > 0).sum())
    uu = ue[:users].contiguous()
    t_mm, _ = _median_time(lambda: [uu[s : s + 4096] @ ie.T for s in range(0, users, 4096)], a.repeats)
    print(
        f"embed (3-layer propagation): {t_embed:.3f} s; score product alone ({users} x {a.dim} x "
        f"{data.num_items}): {t_mm:.3f} s",
        flush=True,
    )
    result = None
    for bs in a.batch_size:

        def run(bs=bs):
            nonlocal result
            result = evaluate_embeddings(
                ue, ie, data.test, exclude=[data.train, data.val], ks=(20,), batch_size=bs
            )

        med, times = _median_time(run, a.repeats)
        print(
            f"evaluate all {result['users']} test users, batch {bs}: median {med:.3f} s "
            f"(runs {', '.join(f'{t:.2f}' for t in times)}); {med / t_mm:.2f}x the score product; "
            f"target < 3 s: {'met' if med < 3 else 'missed'}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
