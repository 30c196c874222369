"""Time to accuracy (issue 9): train a backbone and print its curve and when it first reaches a target.

The run is the library's own ``fit`` (Adam, BPR, early stopping on the validation split) with the
recipe of ``--config`` (its [model] and [train] tables) and any command-line overrides. Each
evaluation row prints the wall seconds of training so far (training plus the validation
evaluations the loop itself does; the test evaluation done for this curve is *excluded*), the
epoch, validation and test Recall@20. The time at which test Recall@20 first reaches
``--target`` is printed at the end, beside the test metrics of the state early stopping keeps
(chosen on validation, never on test).

``--reference pyg`` runs PyTorch Geometric's ``LightGCN`` on the same train/val/test edges in the
same command, as a subprocess of the other virtual environment (``--pyg-python``), for at most
``--reference-minutes``; the ratio of the two times is printed at each new best of the reference's
curve and at the target (``compare_curves``; ``--summarize FILE`` re-prints it from a saved
``--json`` file). ``--val-ratio 0`` trains on the whole training split for ``--epochs`` and keeps
the last state (the paper's protocol, with the epoch count chosen on validation beforehand).

    flock /tmp/unlearnrec-heavy.lock timeout 900 .venv/bin/python benchmarks/time_to_accuracy.py \\
        --dataset ml-1m --backbone lightgcn --config configs/lightgcn-ml-1m.toml --target 0.225 \\
        [--reference pyg --reference-minutes 10]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from unlearnrec.backbones import backbone_config, build_backbone
from unlearnrec.config import from_dict, read_toml
from unlearnrec.data.datasets import load_dataset
from unlearnrec.data.graph import Graph
from unlearnrec.eval.ranking import evaluate_embeddings
from unlearnrec.runtime import child_env, tune_allocator
from unlearnrec.train.loop import TrainConfig, fit

HERE = Path(__file__).resolve().parent
DEFAULT_PYG = "/work/runs/pyg-venv/bin/python"


class _OutOfTime(Exception):
    pass


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="ml-1m")
    p.add_argument("--backbone", default="lightgcn")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--config", default=None, help="TOML with [model] and [train] tables")
    p.add_argument("--target", type=float, default=0.225, help="test Recall@20 to reach")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--lr-decay", type=float, default=None, help="per-epoch multiplicative lr decay")
    p.add_argument("--eval-every", type=int, default=None)
    p.add_argument("--patience", type=int, default=None)
    p.add_argument("--dim", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument(
        "--val-ratio",
        type=float,
        default=0.1,
        help="share of train held out for early stopping; 0 trains on the whole training split for "
        "--epochs (no model selection: the final state is kept)",
    )
    p.add_argument("--max-minutes", type=float, default=20.0, help="stop training after this wall time")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--reference", choices=["none", "pyg"], default="none")
    p.add_argument("--reference-minutes", type=float, default=10.0)
    p.add_argument("--reference-mode", choices=["edge_index", "csr"], default="csr")
    p.add_argument("--reference-batch", type=int, default=2048)
    p.add_argument("--reference-lr", type=float, default=1e-3)
    p.add_argument("--pyg-python", default=DEFAULT_PYG)
    p.add_argument("--json", default=None, help="also write the curves to this JSON file")
    p.add_argument("--summarize", default=None, help="only print the comparison of a saved --json file")
    args = p.parse_args(argv)
    if args.val_ratio == 0 and args.reference != "none":
        p.error("--reference needs a validation split (the reference is given the same one): --val-ratio > 0")
    return args


def recipe(args) -> tuple[dict, TrainConfig]:
    raw = read_toml(args.config) if args.config else {}
    model_raw = {k: v for k, v in raw.get("model", {}).items() if k != "backbone"}
    if args.dim is not None:
        model_raw["dim"] = args.dim
    train_raw = dict(raw.get("train", {}))
    for key in ("epochs", "batch_size", "lr", "lr_decay", "eval_every", "patience", "seed"):
        v = getattr(args, key)
        if v is not None:
            train_raw[key] = v
    train_raw.setdefault("epochs", 1000)
    return model_raw, from_dict(TrainConfig, train_raw, "train")


def run_ours(args, data, model_raw: dict, tcfg: TrainConfig) -> dict:
    mcfg = backbone_config(args.backbone, model_raw)
    graph = Graph.from_interactions(data.train)
    model = build_backbone(
        args.backbone,
        data.num_users,
        data.num_items,
        mcfg,
        generator=torch.Generator().manual_seed(tcfg.seed),
    )
    print(f"ours: {args.backbone} {mcfg} {tcfg}", flush=True)
    excluded = 0.0  # seconds spent on the test evaluation of this curve, not counted as training
    t0 = time.perf_counter()
    curve: list[dict] = []
    reached = None

    def on_epoch(row: dict) -> None:
        nonlocal excluded, reached
        te = time.perf_counter()
        wall = te - t0 - excluded
        if row["epoch"] % tcfg.eval_every == 0 or row["epoch"] == tcfg.epochs:
            with torch.no_grad():
                ue, ie = model.embed(graph)
            test = evaluate_embeddings(ue, ie, data.test, exclude=[data.train, data.val], ks=(20,))
            point = {
                "wall_s": round(wall, 2),
                "epoch": row["epoch"],
                "loss": round(row["total"], 5),
                "val_recall@20": round(row["val_recall@20"], 4) if "val_recall@20" in row else None,
                "test_recall@20": round(test["recall@20"], 4),
                "test_ndcg@20": round(test["ndcg@20"], 4),
            }
            curve.append(point)
            if reached is None and test["recall@20"] >= args.target:
                reached = point
            print("  " + json.dumps(point), flush=True)
        excluded += time.perf_counter() - te
        if wall > args.max_minutes * 60:
            raise _OutOfTime

    stopped = "early stopping or max epochs"
    try:
        res = fit(model, graph, tcfg, val=data.val, on_epoch=on_epoch)
        best_epoch = res.best_epoch
    except _OutOfTime:
        stopped, best_epoch = f"wall limit {args.max_minutes} min", None
        scored = [r for r in curve if r["val_recall@20"] is not None]
        best = max(scored, key=lambda r: r["val_recall@20"]) if scored else (curve[-1] if curve else None)
        best_epoch = best["epoch"] if best else None
    total = time.perf_counter() - t0 - excluded
    best = next((r for r in curve if r["epoch"] == best_epoch), None)
    return {
        "curve": curve,
        "reached": reached,
        "train_wall_s": round(total, 1),
        "stopped": stopped,
        "best_by_val": best,
        "config": {"model": model_raw, "train": str(tcfg)},
    }


def run_pyg(args, data, tcfg: TrainConfig, mcfg) -> dict | None:
    """PyG's LightGCN on the same split, with our model's dim and layers (its own lr and batch)."""
    py = Path(args.pyg_python)
    if not py.exists():
        print(f"reference: {py} not found (create the venv, see benchmarks/README.md)", flush=True)
        return None
    with tempfile.TemporaryDirectory() as d:
        npz = Path(d) / "data.npz"
        np.savez(
            npz,
            num_users=data.num_users,
            num_items=data.num_items,
            train_u=data.train.users,
            train_i=data.train.items,
            val_u=data.val.users,
            val_i=data.val.items,
            test_u=data.test.users,
            test_i=data.test.items,
        )
        cmd = [
            str(py),
            str(HERE / "pyg_reference.py"),
            "train",
            "--data",
            str(npz),
            "--mode",
            args.reference_mode,
            "--batch-size",
            str(args.reference_batch),
            "--lr",
            str(args.reference_lr),
            "--minutes",
            str(args.reference_minutes),
            "--target",
            str(args.target),
            "--seed",
            str(tcfg.seed),
            "--dim",
            str(getattr(mcfg, "dim", 64)),
            "--layers",
            str(getattr(mcfg, "layers", 3)),
        ]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        print("reference: " + " ".join(cmd[1:]), flush=True)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=child_env())  # same allocator
        curve, result = [], None
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.strip()
            if not line.startswith("{"):
                print("  pyg| " + line, flush=True)
                continue
            obj = json.loads(line)
            if obj.get("kind") == "eval":
                curve.append(obj)
                print("  pyg " + line, flush=True)
            elif obj.get("kind") == "result":
                result = obj
            else:
                print("  pyg " + line, flush=True)
        proc.wait()
    return {
        "curve": curve,
        "result": result,
        "reached": next((r for r in curve if r["test_recall@20"] >= args.target), None),
    }


def first_reach(curve: list[dict], level: float) -> dict | None:
    """The first point of a curve whose test Recall@20 is at least ``level`` (None if never)."""
    return next((c for c in curve if c["test_recall@20"] >= level), None)


def compare_curves(ours: list[dict], ref: list[dict], target: float) -> list[str]:
    """Time-to-accuracy ratios of the reference's wall time over ours, level by level.

    The levels are the new bests of the reference curve (each time its test Recall@20 rose above
    all its earlier evaluations), plus ``target``. A ratio needs both curves to reach the level;
    it is a lower bound for our side's speed-up when our first evaluation already passes it (our
    time to that level is at most the first evaluation's).
    """
    lines, best = [], float("-inf")
    levels = []
    for point in ref:
        if point["test_recall@20"] > best:
            best = point["test_recall@20"]
            levels.append(best)
    if target not in levels:
        levels.append(target)
    for level in levels:
        mine, theirs = first_reach(ours, level), first_reach(ref, level)
        if mine is None and theirs is None:
            lines.append(f"recall@20 {level}: neither reached it")
        elif theirs is None:
            lines.append(
                f"recall@20 {level}: ours {mine['wall_s']} s (epoch {mine['epoch']}); reference never "
                f"(> {ref[-1]['wall_s']} s): ratio > {ref[-1]['wall_s'] / mine['wall_s']:.1f}x"
            )
        elif mine is None:
            lines.append(f"recall@20 {level}: reference {theirs['wall_s']} s; ours never reached it")
        else:
            bound = ">= " if mine is ours[0] else ""
            lines.append(
                f"recall@20 {level}: ours {mine['wall_s']} s (epoch {mine['epoch']}), reference "
                f"{theirs['wall_s']} s: ratio {bound}{theirs['wall_s'] / mine['wall_s']:.1f}x"
            )
    return lines


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.summarize:
        saved = json.loads(Path(args.summarize).read_text())
        if not (saved.get("pyg") or {}).get("curve"):
            print(f"{args.summarize}: no reference curve to compare with")
            return 1
        for line in compare_curves(saved["ours"]["curve"], saved["pyg"]["curve"], saved["target"]):
            print(line)
        return 0
    allocator = tune_allocator()
    if args.threads:
        torch.set_num_threads(args.threads)
    model_raw, tcfg = recipe(args)
    data = load_dataset(args.dataset, args.data_dir, val_ratio=args.val_ratio)
    print(
        f"{args.dataset}: train {len(data.train)} val {len(data.val)} test {len(data.test)}; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, allocator {allocator}",
        flush=True,
    )
    ours = run_ours(args, data, model_raw, tcfg)
    r = ours["reached"]
    print(f"ours: stopped by {ours['stopped']} after {ours['train_wall_s']} s of training")
    if ours["best_by_val"]:
        b = ours["best_by_val"]
        print(
            f"ours: state kept (best val, epoch {b['epoch']}): test recall@20 {b['test_recall@20']} "
            f"ndcg@20 {b['test_ndcg@20']}"
        )
    print(
        f"ours: test recall@20 >= {args.target} first at "
        + (f"{r['wall_s']} s (epoch {r['epoch']})" if r else "never (see the curve)"),
        flush=True,
    )
    out = {
        "dataset": args.dataset,
        "backbone": args.backbone,
        "target": args.target,
        "allocator": allocator,
        "ours": ours,
    }
    if args.reference == "pyg":
        ref = run_pyg(args, data, tcfg, backbone_config(args.backbone, model_raw))
        out["pyg"] = ref
        if ref and ref["curve"]:
            for line in compare_curves(ours["curve"], ref["curve"], args.target):
                print(line)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
