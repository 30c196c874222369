"""Ours(0) wall time and peak memory on gowalla / yelp2018 (issue 4), against one training epoch.

For each dataset and embedding size, a LightGCN with random embeddings of the paper's size
(no training needed for timing) and an Influence Encoder with random H⁰, η (its values do not
change the cost) serve a random request of ``--ratio`` of the training edges. Ours(0) is timed
end to end through ``UnlearnRec.forget`` — building the IDM, the residual graph Â_r (O(nnz)), the
IE forward, the new model — median of ``--repeats`` runs. Ē, the trained model's final
embeddings (Eq. 16), is a property of the model computed once in ``prepare`` and cached; its
one-off cost is printed separately, as is a per-stage profile. One training epoch of the
backbone (batch 4096, Adam) is timed in the same run. Peak memory is the growth of the process's
resident high-water mark during one Ours(0) (reset through /proc/self/clear_refs; in a child process
with a fixed glibc mmap threshold, see ``peak_in_child``), compared with
the bytes of the model (E⁰) and its graph (Â in CSR plus the edge arrays).

``--full-retrain EPOCHS`` also runs Retrain in the same command: a fresh LightGCN of the same size
trained on the residual graph for EPOCHS epochs with the CPU recipe (Adam lr 1e-2 decayed 0.97 per
epoch, batch 8192; no early stopping), and prints its time, its test Recall@20 / NDCG@20 and
Ours(0)'s fraction of it.

    flock /tmp/unlearnrec-heavy.lock timeout 900 .venv/bin/python benchmarks/bench_forget.py

``--compare`` (issue 25) times Retrain against Ours(0) and Ours(k) for each ``--ks`` in one command,
through the experiment runner's own cells (``experiments.cell.run_cell``: the grids' recipe, protocol and
metrics): the attacked model and the pre-trained encoder are cached under ``--cache`` (built on the
first run), Retrain is measured in the same command every time, each Ours(k) ``--repeats`` times
(median). It prints seconds, Retrain's time over each method's, the same for the CPU time of each whole
cell (forgetting plus its evaluation; less sensitive to a shared machine's load than wall time), the test
Recall@20 and its share of Retrain's, the validation Recall@20, MI-BF, MI-NG, AUC, and the fine-tuning
steps run:

    nice -n 5 .venv/bin/python benchmarks/bench_forget.py --compare --datasets ml-1m --threads 1 \
        --cache runs/bench-forget --ks 0 1 3

Its adversarial request stays per user only by default (``--user-ratio 1 --item-ratio 0``: the request
every committed ``--compare`` timing was measured on), unlike a grid's, which defaults to the authors'
protocol; ``--item-ratio 1`` adds one lowest-scored user per item (``--user-ratio 0.6 --item-ratio 0.6``
on Yelp2018).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from unlearnrec.backbones import build_backbone
from unlearnrec.data.datasets import load_dataset
from unlearnrec.data.graph import Graph
from unlearnrec.data.requests import sample_edges
from unlearnrec.eval.ranking import evaluate_embeddings
from unlearnrec.model import TrainedModel
from unlearnrec.train.loop import TrainConfig, fit
from unlearnrec.unlearn.base import Request
from unlearnrec.unlearn.unlearnrec import UnlearnRec, UnlearnRecConfig, build_idm, local_idm
from unlearnrec.unlearn.unlearnrec.pretrain import copy_backbone


def _status_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_growth_mb(fn) -> float:
    """Growth of the resident high-water mark (VmHWM) over the current RSS while ``fn`` runs."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    except OSError:
        return float("nan")
    base = _status_mb("VmRSS")
    fn()
    return _status_mb("VmHWM") - base


def peak_in_child(name: str, dim: int, ratio: float, root) -> float:
    """Peak memory of one Ours(0), measured in a fresh process whose glibc returns every large
    freed block to the OS (a fixed mmap threshold), so that the resident high-water mark shows
    what the call needs rather than what earlier calls left cached. Timings are taken in this
    process, without that setting (it would add page faults to every allocation)."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    argv = [
        sys.executable,
        __file__,
        "--peak-child",
        "--datasets",
        name,
        "--dims",
        str(dim),
        "--ratio",
        str(ratio),
    ]
    if root:
        argv += ["--data-dir", str(root)]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout
    return float(json.loads(out.strip().splitlines()[-1])["peak_mb"])


def tensor_mb(*ts: torch.Tensor) -> float:
    return sum(t.numel() * t.element_size() for t in ts) / 2**20


def full_retrain(data, graph: Graph, request: Request, dim: int, recipe: dict) -> dict:
    """Retrain, the reference Ours(0) replaces: a fresh LightGCN trained on the residual graph (the
    training set less the request) for ``recipe["epochs"]`` epochs, without early stopping, then its
    test Recall@20 / NDCG@20 (the final state; nothing is chosen on the test set)."""
    gen = torch.Generator().manual_seed(0)
    bb = build_backbone("lightgcn", data.train.num_users, data.train.num_items, {"dim": dim}, generator=gen)
    cfg = TrainConfig(patience=0, **recipe)
    t = time.perf_counter()
    residual = graph.residual(request.edges)
    res = fit(bb, residual, cfg)
    seconds = time.perf_counter() - t
    with torch.no_grad():
        ue, ie = bb.embed(residual)
    test = evaluate_embeddings(ue, ie, data.test, exclude=[data.train], ks=(20,))
    return {
        "retrain_s": seconds,
        "retrain_epochs": res.epochs_run,
        "retrain_recipe": recipe,
        "retrain_test": {k: float(v) for k, v in test.items() if k != "users"},
    }


def bench(
    name: str,
    dim: int,
    ratio: float,
    repeats: int,
    epoch: bool,
    root,
    peak_only: bool = False,
    retrain: dict | None = None,
) -> dict:
    data = load_dataset(name, root, val_ratio=0.0)
    train = data.train
    graph = Graph.from_interactions(train)
    gen = torch.Generator().manual_seed(0)
    backbone = build_backbone("lightgcn", train.num_users, train.num_items, {"dim": dim}, generator=gen)
    # as a loaded checkpoint has it (a model in memory would hash its 1M edges on every request)
    model = TrainedModel(backbone, graph, "lightgcn", name, meta={"train_fingerprint": train.fingerprint()})
    method = UnlearnRec(UnlearnRecConfig(), seed=0)
    enc = method.new_encoder(model)
    with torch.no_grad():
        enc.h0.normal_(std=0.01, generator=gen)
        enc.eta.uniform_(0, 0.01, generator=gen)
    method.encoder = enc
    t = time.perf_counter()
    method.final_embeddings(model)  # Ē: once per model (prepare computes it)
    ebar_s = time.perf_counter() - t
    request = Request(sample_edges(train, ratio, np.random.default_rng(0)))
    method.forget(model, train, request)  # warm-up
    if peak_only:
        return {"peak_mb": peak_growth_mb(lambda: method.forget(model, train, request))}
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        method.forget(model, train, request)
        times.append(time.perf_counter() - t)
    # per-stage profile (one run each)
    prof = {}
    t = time.perf_counter()
    nodes, sub = local_idm(request.edges)
    prof["idm"] = time.perf_counter() - t
    t = time.perf_counter()
    graph.residual(request.edges)
    prof["residual"] = time.perf_counter() - t
    e_bar = method.final_embeddings(model)
    base = method._base(model, enc)
    with torch.no_grad():
        t = time.perf_counter()
        e0_new = enc.serve(nodes, sub, backbone.e0, e_bar, base=base)
        prof["ie_serve"] = time.perf_counter() - t
        t = time.perf_counter()
        enc(build_idm(request.edges), backbone.e0, e_bar)
        prof["ie_all_rows(unused)"] = time.perf_counter() - t
    t = time.perf_counter()
    copy_backbone(backbone, e0_new)
    prof["copy_backbone"] = time.perf_counter() - t
    peak = peak_in_child(name, dim, ratio, root)
    cold = UnlearnRec(UnlearnRecConfig(), seed=0)  # a fresh process's first request: Ē not cached
    cold.encoder = enc
    t = time.perf_counter()
    cold.forget(model, train, request)
    cold_s = time.perf_counter() - t
    adj = graph.adj
    held = (
        tensor_mb(backbone.e0, adj.crow_indices(), adj.col_indices(), adj.values())
        + (train.users.nbytes + train.items.nbytes) / 2**20
    )
    out = {
        "dataset": name,
        "dim": dim,
        "users": train.num_users,
        "items": train.num_items,
        "edges": len(train),
        "request_edges": len(request),
        "ours0_median_s": statistics.median(times),
        "ours0_runs_s": times,
        "ebar_once_s": ebar_s,
        "ours0_uncached_s": cold_s,
        "profile_s": prof,
        "peak_mb": peak,
        "model_graph_mb": held,
        "peak_over_model_graph": peak / held,
    }
    if epoch:
        bb = copy.deepcopy(backbone)
        res = fit(bb, graph, TrainConfig(epochs=1, batch_size=4096, lr=1e-3, patience=0))
        out["train_epoch_s"] = res.seconds
        out["ours0_over_epoch"] = out["ours0_median_s"] / res.seconds
    if retrain:
        out.update(full_retrain(data, graph, request, dim, retrain))
        out["ours0_over_retrain"] = out["ours0_median_s"] / out["retrain_s"]
        out["retrain_over_ours0"] = out["retrain_s"] / out["ours0_median_s"]
    return out


# the grids' recipe (experiments/ml-1m-table2-cpu.toml) and the encoder of configs/unlearnrec-cpu.toml
GRID_TRAIN = {"epochs": 30, "batch_size": 4096, "lr": 1e-2, "eval_every": 3, "patience": 2}
ENCODER = {"epochs": 10, "ratio": 0.2, "batch_size": 4096, "lr": 5e-3, "lambda_p": 1.25e-3}


def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def _fields(pairs: list[str]) -> dict:
    """``["key=value", ...]`` as a dict with numbers and booleans parsed."""
    return {k: _value(v) for k, v in (kv.split("=", 1) for kv in pairs if kv)}


def _wait_for_encoder(runner, group, spec, seconds: float) -> None:
    """Wait up to ``seconds`` for the cached pre-trained encoder of ``spec`` (being pre-trained by
    another process while Retrain is timed here); past that, the cell pre-trains it itself."""
    folder = runner.store.prepared_dir(group, spec)
    end = time.monotonic() + seconds
    while not (folder / "meta.json").is_file() and time.monotonic() < end:
        time.sleep(10)


def compare(args) -> list[dict]:
    """Retrain, Ours(0) and Ours(k) on one attacked model, each through ``experiments.cell.run_cell``."""
    from unlearnrec.experiments.cell import run_cell
    from unlearnrec.experiments.grid import load_config
    from unlearnrec.experiments.runner import Runner

    finetune = _fields(args.ours)
    methods = [{"name": "retrain", "label": "Retrain"}]
    for k in args.ks:
        cfg = {**ENCODER, **(finetune if k else {}), "finetune_epochs": k}
        methods.append({"name": "unlearnrec", "label": f"Ours({k})", "config": cfg})
    for variant in args.variants:  # further Ours(k > 0) rows against the same Retrain
        for k in (k for k in args.ks if k):
            cfg = {**ENCODER, **finetune, **_fields(variant.split(",")), "finetune_epochs": k}
            methods.append({"name": "unlearnrec", "label": f"Ours({k}) {variant}", "config": cfg})
    rows = []
    for name in args.datasets:
        if args.request == "adversarial":
            request = {"ratios": [args.user_ratio], "item_ratio": args.item_ratio}
        else:  # a random request or whole users: no attack, the model trained on the clean split
            request = {"request": args.request, "request_ratios": [args.request_ratio]}
        exp = load_config(
            {
                "name": f"bench-forget-{name}",
                "datasets": [name],
                "backbones": [args.backbone],
                **request,
                "seeds": [0],
                "val_ratio": 0.1,
                "split_seed": 0,
                "train": GRID_TRAIN,
                "model": {args.backbone: {"dim": 64, "layers": 3, "reg": 1e-4}},
                "methods": methods,
            }
        )
        cache = Path(args.cache) / name
        runner = Runner(exp, cache, data_dir=args.data_dir, cache_dir=cache)
        group = runner.groups()[0]
        data = runner.store.dataset(name)
        runner.store.model(group)  # trained once, then from the cache
        reference = None
        out = []
        for spec in exp.methods:
            if spec.name == "unlearnrec" and args.prepare_wait > 0:
                _wait_for_encoder(runner, group, spec, args.prepare_wait)
            reps = 1 if spec.name == "retrain" else args.repeats
            times, cpu, rec, result = [], [], None, None
            for _ in range(reps):
                c = time.process_time()
                rec, result = run_cell(runner.store, group, spec, runner.build, reference)
                # the CPU time of the whole cell (forget plus its evaluation), all threads of this process:
                # with --threads 1 it moves far less than wall time with the machine's load
                cpu.append(time.process_time() - c)
                times.append(float(rec["seconds"]))
            if spec.name == "retrain":
                reference = result.model
            m = rec["metrics"]
            info = rec.get("info", {})
            out.append(
                {
                    "dataset": name,
                    "method": spec.title,
                    "seconds_median": statistics.median(times),
                    "seconds": times,
                    "cell_cpu_seconds": statistics.median(cpu),
                    "recall@20": m["recall@20"],
                    "ndcg@20": m["ndcg@20"],
                    "val_recall@20": result.model.evaluate(data, "val")["recall@20"],
                    "mi_bf": m["mi_bf"],
                    "mi_ng": m["mi_ng"],
                    "auc": m["auc"],
                    "steps": info.get("finetune_steps_run", 0),
                    "stopped": info.get("finetune_stopped"),
                    "request_edges": (rec.get("attack") or rec.get("request") or {}).get("edges"),
                    "config": spec.config,
                    "load_average": os.getloadavg()[0],
                }
            )
            r = out[-1]
            print(  # progress, as each cell ends (the table follows)
                f"  {r['method']}: {r['seconds_median']:.2f} s, Recall {r['recall@20']:.4f}, MI-NG "
                f"{r['mi_ng']:.2f}, load {r['load_average']:.1f}",
                file=sys.stderr,
                flush=True,
            )
        base = out[0]
        loads = [r["load_average"] for r in out]
        print(
            f"{name} {args.backbone}: {args.request} request of {base['request_edges']:,} edges; "
            f"Ours(k) fine-tuning {finetune or 'defaults'}; load average "
            f"{min(loads):.1f}-{max(loads):.1f} after the cells"
        )
        width = max(len(r["method"]) for r in out)
        print(
            f"{'method':{width}s} {'seconds':>9s} {'Retrain/x':>10s} {'cell CPU s':>10s} {'Retrain/x':>10s} "
            f"{'Recall':>7s} {'share':>7s} "
            f"{'val Rec':>8s} {'MI-BF':>7s} {'MI-NG':>7s} {'AUC':>6s} {'steps':>6s} stopped"
        )
        for r in out:
            r["retrain_over"] = base["seconds_median"] / r["seconds_median"]
            r["retrain_over_cpu"] = base["cell_cpu_seconds"] / r["cell_cpu_seconds"]
            r["recall_share"] = r["recall@20"] / base["recall@20"]
            print(
                f"{r['method']:{width}s} {r['seconds_median']:9.2f} {r['retrain_over']:9.1f}x "
                f"{r['cell_cpu_seconds']:10.2f} {r['retrain_over_cpu']:9.1f}x "
                f"{r['recall@20']:7.4f} "
                f"{r['recall_share']:7.1%} {r['val_recall@20']:8.4f} {r['mi_bf']:7.2f} {r['mi_ng']:7.2f} "
                f"{r['auc']:6.3f} {r['steps']:6d} {r['stopped']}",
                flush=True,
            )
        rows.extend(out)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["gowalla", "yelp2018"])
    p.add_argument("--dims", type=int, nargs="+", default=[64, 128])
    p.add_argument("--ratio", type=float, default=0.005)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-epoch", action="store_true", help="skip timing a training epoch")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None, help="also write the results as JSON")
    p.add_argument(
        "--full-retrain",
        type=int,
        default=0,
        metavar="EPOCHS",
        help="also time Retrain: a fresh LightGCN trained EPOCHS epochs on the residual graph (0: skip)",
    )
    p.add_argument("--retrain-lr", type=float, default=1e-2)
    p.add_argument("--retrain-lr-decay", type=float, default=0.97)
    p.add_argument("--retrain-batch-size", type=int, default=8192)
    p.add_argument("--peak-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--compare", action="store_true", help="Retrain vs Ours(0) and Ours(k) (issue 25)")
    p.add_argument("--ks", type=int, nargs="+", default=[0, 1, 3], help="--compare: the k of Ours(k)")
    p.add_argument("--cache", default="runs/bench-forget", help="--compare: models and encoders cached here")
    p.add_argument("--backbone", default="lightgcn", help="--compare: the backbone")
    p.add_argument("--user-ratio", type=float, default=1.0, help="--compare: users given an adversarial edge")
    p.add_argument(
        "--item-ratio",
        type=float,
        default=0.0,
        help="--compare: items given an adversarial edge (default 0: per user only, the request of the "
        "committed timings; 1 with --user-ratio 1: the authors' protocol, the grids' default)",
    )
    p.add_argument(
        "--request", default="adversarial", choices=["adversarial", "random", "users"], help="--compare: kind"
    )
    p.add_argument(
        "--request-ratio", type=float, default=0.0092, help="--compare: share of edges (random) or users"
    )
    p.add_argument(
        "--ours",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="--compare: UnlearnRecConfig fine-tuning fields of Ours(k>0), e.g. finetune_steps=40",
    )
    p.add_argument(
        "--prepare-wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="--compare: wait this long for an encoder another process is pre-training into --cache",
    )
    p.add_argument(
        "--variants",
        nargs="*",
        default=[],
        metavar="KEY=VALUE,...",
        help="--compare: each adds Ours(k > 0) rows with these fields on top of --ours",
    )
    args = p.parse_args()
    retrain = None
    if args.full_retrain > 0:
        retrain = {
            "epochs": args.full_retrain,
            "lr": args.retrain_lr,
            "lr_decay": args.retrain_lr_decay,
            "batch_size": args.retrain_batch_size,
        }
    torch.set_num_threads(args.threads)
    if args.compare:
        rows = compare(args)
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(rows, indent=1))
        return
    if args.peak_child:
        r = bench(args.datasets[0], args.dims[0], args.ratio, 0, False, args.data_dir, peak_only=True)
        print(json.dumps(r))
        return
    rows = []
    for name in args.datasets:
        for dim in args.dims:
            r = bench(name, dim, args.ratio, args.repeats, not args.no_epoch, args.data_dir, retrain=retrain)
            rows.append(r)
            prof = "  ".join(f"{k}={v * 1000:.0f}ms" for k, v in r["profile_s"].items())
            line = (
                f"{name:9s} d={dim:<3d} |E|={r['edges']:,} |E_Δ|={r['request_edges']:,}  "
                f"Ours(0) median {r['ours0_median_s']:.3f}s  (Ē once {r['ebar_once_s']:.3f}s, first request "
                f"{r['ours0_uncached_s']:.3f}s; {prof})  "
                f"peak +{r['peak_mb']:.0f} MiB = {r['peak_over_model_graph']:.2f}x model+graph "
                f"({r['model_graph_mb']:.0f} MiB)"
            )
            if "train_epoch_s" in r:
                line += f"  epoch {r['train_epoch_s']:.1f}s  ratio {r['ours0_over_epoch']:.4f}"
            if "retrain_s" in r:
                line += (
                    f"  Retrain {r['retrain_epochs']} epochs {r['retrain_s']:.0f}s "
                    f"(test Recall@20 {r['retrain_test']['recall@20']:.4f}, "
                    f"NDCG@20 {r['retrain_test']['ndcg@20']:.4f}): "
                    f"Ours(0) = {r['ours0_over_retrain']:.2e} of it, {r['retrain_over_ours0']:,.0f}x faster"
                )
            print(line, flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
